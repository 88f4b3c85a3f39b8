//! A minimal ACS3-HMAC-SHA256 *client* signer for the emulator's own tests and benchmark. It is
//! written separately from the verifier (`sigv3`) and checked against the published vectors, and
//! it can deliberately break a request (unsigned header, stale date, wrong hash) for gateway tests.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// One request to sign. Start from [`TestRequest::new`] and adjust fields to misbehave.
#[derive(Clone)]
pub struct TestRequest {
    pub action: String,
    pub version: String,
    pub params: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub content_type: Option<String>,
    /// `x-acs-date`; defaults to now.
    pub date: String,
    /// `x-acs-signature-nonce`; defaults to 32 random hex digits.
    pub nonce: String,
    pub security_token: Option<String>,
    /// Extra headers, signed unless listed in `unsigned`.
    pub extra_headers: Vec<(String, String)>,
    /// Header names (lowercase) sent but left out of SignedHeaders.
    pub unsigned: Vec<String>,
    /// Send this `x-acs-content-sha256` instead of the body's hash (signed as sent).
    pub payload_hash_override: Option<String>,
}

/// The signed result: form-encoded wire query and all headers to send (host included).
pub struct SignedRequest {
    pub query: String,
    pub headers: Vec<(String, String)>,
}

fn enc(s: &str, space_as_plus: bool) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                o.push(b as char)
            }
            b' ' if space_as_plus => o.push('+'),
            _ => write!(o, "%{b:02X}").expect("write to String"),
        }
    }
    o
}

impl TestRequest {
    pub fn new(action: &str, params: &[(&str, &str)]) -> Self {
        let nonce: [u8; 16] = rand::random();
        Self {
            action: action.to_string(),
            version: "2019-06-01".to_string(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
            content_type: None,
            date: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            nonce: hex::encode(nonce),
            security_token: None,
            extra_headers: Vec::new(),
            unsigned: Vec::new(),
            payload_hash_override: None,
        }
    }

    /// Sign for `host` (the value of the Host header, with port) with the given key.
    pub fn sign(&self, host: &str, key_id: &str, secret: &str) -> SignedRequest {
        let body_hash = hex::encode(Sha256::digest(&self.body));
        let hash = self.payload_hash_override.clone().unwrap_or(body_hash);
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), host.into()),
            ("x-acs-action".into(), self.action.clone()),
            ("x-acs-version".into(), self.version.clone()),
            ("x-acs-date".into(), self.date.clone()),
            ("x-acs-signature-nonce".into(), self.nonce.clone()),
            ("x-acs-content-sha256".into(), hash.clone()),
        ];
        if let Some(t) = &self.security_token {
            headers.push(("x-acs-security-token".into(), t.clone()));
        }
        if let Some(c) = &self.content_type {
            headers.push(("content-type".into(), c.clone()));
        }
        headers.extend(self.extra_headers.iter().cloned());
        let mut signed: Vec<(String, String)> = headers
            .iter()
            .filter(|(k, _)| !self.unsigned.contains(k))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        signed.sort();
        let names: Vec<&str> = signed.iter().map(|(k, _)| k.as_str()).collect();
        let signed_names = names.join(";");
        let mut sorted = self.params.clone();
        sorted.sort();
        let canonical_query: Vec<String> = sorted
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k, false), enc(v, false)))
            .collect();
        let mut canonical = format!("POST\n/\n{}\n", canonical_query.join("&"));
        for (k, v) in &signed {
            canonical.push_str(&format!("{k}:{v}\n"));
        }
        canonical.push_str(&format!("\n{signed_names}\n{hash}"));
        let to_sign = format!(
            "ACS3-HMAC-SHA256\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(to_sign.as_bytes());
        let sig = hex::encode(mac.finalize().into_bytes());
        headers.push((
            "authorization".into(),
            format!(
                "ACS3-HMAC-SHA256 Credential={key_id},SignedHeaders={signed_names},Signature={sig}"
            ),
        ));
        // Wire form as the Python SDK sends it: insertion order, space as '+'.
        let query: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k, true), enc(v, true)))
            .collect();
        SignedRequest {
            query: query.join("&"),
            headers,
        }
    }

    /// A reqwest request to `endpoint` (`http://host:port`), signed with the given key.
    pub fn build(
        &self,
        client: &reqwest::Client,
        endpoint: &str,
        key_id: &str,
        secret: &str,
    ) -> reqwest::RequestBuilder {
        let host = endpoint
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let s = self.sign(host, key_id, secret);
        let mut rb = client.post(format!("{}/?{}", endpoint.trim_end_matches('/'), s.query));
        for (k, v) in s.headers {
            // reqwest derives Host from the URL; the value is the same.
            if k != "host" {
                rb = rb.header(k, v);
            }
        }
        rb.body(self.body.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_published_create_vector() {
        let mut r = TestRequest::new(
            "CreateChatConfiguration",
            &[
                ("RegionId", "cn-hangzhou"),
                ("Name", "chatops-1"),
                ("Type", "DingTalk"),
                ("RamRole", "OOSServiceRole"),
                (
                    "Configuration",
                    r#"{"DingTalkClientId":"ding abc*~/+","DingTalkClientSecret":"s3cr3t","DingTalkTemplateId":"tpl-1.schema"}"#,
                ),
            ],
        );
        r.date = "2026-01-02T03:04:05Z".into();
        r.nonce = "0123456789abcdef0123456789abcdef".into();
        let s = r.sign(
            "oos.cn-hangzhou.aliyuncs.com",
            "testAccessKeyId",
            "testAccessKeySecret",
        );
        let auth = &s
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1;
        assert!(auth.ends_with(
            "Signature=8a655c91999744adf295d8f7e1c3a9b5c29e3a4691cce2f3208baf34a33b717d"
        ));
        assert!(s.query.contains("ding+abc%2A~%2F%2B"));
    }
}
