//! Server-side ACS3-HMAC-SHA256 verification (reference section 6.11). Written independently of
//! the crate's client signer so that a bug in one cannot hide in the other.

use super::codec::{form_decode, rfc3986};
use super::error::ApiError;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// The parts of an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub credential: String,
    /// The `SignedHeaders` value exactly as received.
    pub signed_headers: String,
    pub signature: String,
}

impl Authorization {
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.signed_headers.split(';')
    }
}

/// Parse `ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…`.
pub fn parse_authorization(value: Option<&str>) -> Result<Authorization, ApiError> {
    let incomplete = |why: &str| ApiError::IncompleteSignature(why.to_string());
    let value = value.ok_or_else(|| incomplete("The Authorization header is missing."))?;
    let (alg, rest) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| incomplete("The Authorization header is malformed."))?;
    if alg != ALGORITHM {
        return Err(ApiError::InvalidSignatureMethod);
    }
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or_else(|| incomplete("The Authorization header is malformed."))?;
        let slot = match k {
            "Credential" => &mut cred,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut sig,
            _ => return Err(incomplete("The Authorization header has an unknown part.")),
        };
        if slot.replace(v.to_string()).is_some() {
            return Err(incomplete("The Authorization header repeats a part."));
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) = (cred, signed, sig) else {
        return Err(incomplete(
            "The Authorization header needs Credential, SignedHeaders and Signature.",
        ));
    };
    if credential.is_empty() || signature.is_empty() || signed_headers.is_empty() {
        return Err(incomplete("The Authorization header has an empty part."));
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    let well_formed = names.iter().all(|n| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    }) && names.windows(2).all(|w| w[0] < w[1]);
    if !well_formed {
        return Err(incomplete(
            "SignedHeaders must be lowercase header names, sorted, without duplicates.",
        ));
    }
    Ok(Authorization {
        credential,
        signed_headers,
        signature,
    })
}

/// Policy A2: `host`, `content-type` (when present) and every received `x-acs-*` header must be
/// signed; every signed header must be present.
pub fn check_signed_header_policy(
    auth: &Authorization,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let signed: Vec<&str> = auth.header_names().collect();
    if !signed.contains(&"host") {
        return Err(ApiError::IncompleteSignature(
            "The host header must be signed.".into(),
        ));
    }
    for name in headers.keys() {
        let n = name.as_str();
        if (n.starts_with("x-acs-") || n == "content-type") && !signed.contains(&n) {
            return Err(ApiError::IncompleteSignature(format!(
                "The header {n} must be signed."
            )));
        }
    }
    for n in signed {
        if !headers.contains_key(n) {
            return Err(ApiError::IncompleteSignature(format!(
                "The signed header {n} is not in the request."
            )));
        }
    }
    Ok(())
}

/// Canonical query from the raw (form-encoded) query string: decode, re-encode per RFC 3986,
/// sort by (name, value), join.
pub fn canonical_query(raw_query: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (rfc3986(&form_decode(k)), rfc3986(&form_decode(v)))
        })
        .collect();
    pairs.sort();
    let mut out = String::with_capacity(raw_query.len() + 16);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Canonical headers for the names in `SignedHeaders`: `name:trimmed value\n` each; a repeated
/// header's trimmed values are sorted and joined with `,`.
pub fn canonical_headers(auth: &Authorization, headers: &HeaderMap) -> String {
    let mut out = String::new();
    for name in auth.header_names() {
        let mut values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string())
            .collect();
        values.sort();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The canonical request of section 6.2.
pub fn canonical_request(
    method: &str,
    path: &str,
    raw_query: &str,
    auth: &Authorization,
    headers: &HeaderMap,
    payload_hash: &str,
) -> String {
    format!(
        "{method}\n{path}\n{}\n{}\n{}\n{payload_hash}",
        canonical_query(raw_query),
        canonical_headers(auth, headers),
        auth.signed_headers
    )
}

/// Expected signature (lowercase hex) for a canonical request.
pub fn expected_signature(secret: &str, canonical_request: &str) -> String {
    let string_to_sign = format!("{ALGORITHM}\n{}", sha256_hex(canonical_request.as_bytes()));
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Constant-time comparison of the received and the expected signature.
pub fn signatures_match(received: &str, expected: &str) -> bool {
    received.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const SIX: &str =
        "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn oos_headers(action: &str) -> HeaderMap {
        headers(&[
            ("host", "oos.cn-hangzhou.aliyuncs.com"),
            ("x-acs-action", action),
            ("x-acs-version", "2019-06-01"),
            ("x-acs-date", "2026-01-02T03:04:05Z"),
            ("x-acs-signature-nonce", "0123456789abcdef0123456789abcdef"),
            ("x-acs-content-sha256", EMPTY),
        ])
    }

    fn auth(signed: &str, sig: &str) -> Authorization {
        Authorization {
            credential: "testAccessKeyId".into(),
            signed_headers: signed.into(),
            signature: sig.into(),
        }
    }

    /// Vectors from signature-vectors.md; wire queries are written form-style as the SDK sends them.
    #[test]
    fn published_vectors_verify() {
        let cases = [
            (
                "CreateChatConfiguration",
                "Configuration=%7B%22DingTalkClientId%22%3A%22ding+abc%2A~%2F%2B%22%2C%22DingTalkClientSecret%22%3A%22s3cr3t%22%2C%22DingTalkTemplateId%22%3A%22tpl-1.schema%22%7D&Name=chatops-1&RamRole=OOSServiceRole&RegionId=cn-hangzhou&Type=DingTalk",
                "719b5a3241a240801f1add0d412420cd536c4a6dcc1d79d037dbb22c16c2a1b9",
                "8a655c91999744adf295d8f7e1c3a9b5c29e3a4691cce2f3208baf34a33b717d",
            ),
            (
                "ListChatConfigurations",
                // Deliberately unsorted on the wire: the canonical query sorts.
                "RegionId=cn-hangzhou&Filters.2.Value=chat+ops&Filters.1.Name=Type&Filters.1.Value=DingTalk&Filters.2.Name=Name&MaxResults=10&NextToken=AQEBARoBBgEAAgIBBQ%3D%3D",
                "b6f45e27b5a438236f61a8e456096f099da18cbf708d6a2c88174d205702ca9d",
                "93f6cd5b520ef4b6a78d8e095269af305f4e0a3411948dbcb492724ba3056a9a",
            ),
            (
                "DeleteChatConfiguration",
                "Name=chatops-1",
                "f8e2fcbcabcee7d9a592db0c2a54a8dad8b13f1a5e8f32080b122e760ed7b94c",
                "d7d7ae775d5ddbce86132cdf4532ae410d23c7219fd4396579c057888b81af40",
            ),
        ];
        for (action, query, hashed, sig) in cases {
            let a = auth(SIX, sig);
            let cr = canonical_request("POST", "/", query, &a, &oos_headers(action), EMPTY);
            assert_eq!(sha256_hex(cr.as_bytes()), hashed, "{action}");
            let expected = expected_signature("testAccessKeySecret", &cr);
            assert!(signatures_match(sig, &expected), "{action}");
            assert!(!signatures_match(sig, &expected_signature("wrong", &cr)));
        }
    }

    #[test]
    fn doc_runinstances_vector() {
        let h = headers(&[
            ("host", "ecs.cn-shanghai.aliyuncs.com"),
            ("x-acs-action", "RunInstances"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-date", "2023-10-26T10:22:32Z"),
            ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
            ("x-acs-content-sha256", EMPTY),
        ]);
        let a = auth(SIX, "");
        let cr = canonical_request(
            "POST",
            "/",
            "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai",
            &a,
            &h,
            EMPTY,
        );
        assert_eq!(
            expected_signature("YourAccessKeySecret", &cr),
            "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
    }

    #[test]
    fn authorization_parsing() {
        let ok = parse_authorization(Some(&format!(
            "ACS3-HMAC-SHA256 Credential=k,SignedHeaders={SIX},Signature=abc"
        )))
        .unwrap();
        assert_eq!(ok.credential, "k");
        assert_eq!(ok.header_names().count(), 6);
        let code = |v: Option<&str>| parse_authorization(v).unwrap_err().code();
        assert_eq!(code(None), "IncompleteSignature");
        assert_eq!(
            code(Some("ACS3-HMAC-SHA256 Credential=k,Signature=abc")),
            "IncompleteSignature"
        );
        assert_eq!(
            code(Some(
                "ACS3-HMAC-SHA1 Credential=k,SignedHeaders=host,Signature=a"
            )),
            "InvalidSignatureMethod"
        );
        assert_eq!(
            code(Some(
                "ACS3-HMAC-SHA256 Credential=k,SignedHeaders=x-acs-date;host,Signature=a"
            )),
            "IncompleteSignature"
        );
        assert_eq!(
            code(Some(
                "ACS3-HMAC-SHA256 Credential=k,SignedHeaders=Host,Signature=a"
            )),
            "IncompleteSignature"
        );
        assert_eq!(
            code(Some(
                "ACS3-HMAC-SHA256 Credential=k,Credential=j,SignedHeaders=host,Signature=a"
            )),
            "IncompleteSignature"
        );
    }

    #[test]
    fn header_policy() {
        let h = oos_headers("GetChatConfiguration");
        assert!(check_signed_header_policy(&auth(SIX, ""), &h).is_ok());
        let no_host = SIX.replace("host;", "");
        assert!(
            check_signed_header_policy(&auth(&no_host, ""), &h)
                .unwrap_err()
                .to_string()
                .contains("host")
        );
        let no_date = SIX.replace("x-acs-date;", "");
        assert!(
            check_signed_header_policy(&auth(&no_date, ""), &h)
                .unwrap_err()
                .to_string()
                .contains("x-acs-date")
        );
        let extra = format!("{SIX};zz-absent");
        assert!(check_signed_header_policy(&auth(&extra, ""), &h).is_err());
    }

    #[test]
    fn repeated_headers_sorted_and_joined() {
        let h = headers(&[("host", "h"), ("x-acs-b", " 2 "), ("x-acs-b", "1")]);
        assert_eq!(
            canonical_headers(&auth("host;x-acs-b", ""), &h),
            "host:h\nx-acs-b:1,2\n"
        );
    }
}
