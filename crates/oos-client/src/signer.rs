//! Pure ACS3-HMAC-SHA256 (signature V3) signer: no I/O, no clock. The date and nonce are
//! ordinary header values supplied by the caller, so every output is reproducible in tests.

use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";

/// SHA-256 of the empty body, the payload hash of every chat action.
pub const EMPTY_PAYLOAD_HASH: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lowercase hex HMAC-SHA256.
pub fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// RFC 3986 unreserved characters (`A-Z a-z 0-9 - _ . ~`) stay as they are; every other
/// UTF-8 byte is encoded. `NON_ALPHANUMERIC` is "everything but ASCII letters and digits".
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// RFC 3986 percent-encoding with uppercase hex (space is `%20`, never `+`).
pub fn percent_encode(input: &str) -> String {
    utf8_percent_encode(input, NOT_UNRESERVED).to_string()
}

/// Canonical query: sort by name then value in byte order, encode both per RFC 3986, join
/// `name=value` with `&`. The client sends this exact string as the URL query.
pub fn canonical_query<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> String {
    let mut pairs: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    pairs.sort_unstable_by(|a, b| {
        a.0.as_bytes()
            .cmp(b.0.as_bytes())
            .then(a.1.as_bytes().cmp(b.1.as_bytes()))
    });
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Canonical headers block (every entry ends in `\n`) and the `SignedHeaders` list.
/// Names are lowercased, values trimmed; a repeated name gets its values sorted and joined by `,`.
pub fn canonical_headers<K: AsRef<str>, V: AsRef<str>>(headers: &[(K, V)]) -> (String, String) {
    let mut merged: std::collections::BTreeMap<String, Vec<&str>> = Default::default();
    for (k, v) in headers {
        merged
            .entry(k.as_ref().trim().to_ascii_lowercase())
            .or_default()
            .push(v.as_ref().trim());
    }
    let mut block = String::new();
    for (name, values) in merged.iter_mut() {
        values.sort_unstable();
        block.push_str(name);
        block.push(':');
        block.push_str(&values.join(","));
        block.push('\n');
    }
    let signed = merged.keys().cloned().collect::<Vec<_>>().join(";");
    (block, signed)
}

/// Everything the signature covers. `Debug` shows parameter and header names only (values
/// hold secrets: the `Configuration` query, the STS token header).
#[derive(Clone, Copy)]
pub struct SigningRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Decoded parameter names and values.
    pub query: &'a [(String, String)],
    /// The headers to sign (exactly these), with their wire values.
    pub headers: &'a [(String, String)],
    /// Lowercase hex SHA-256 of the body.
    pub payload_hash: &'a str,
}

/// Every intermediate product, so tests can compare each step with the published vectors.
///
/// The canonical query and request hold every parameter value, secrets included (the
/// `Configuration` JSON with the ClientSecret) and the STS token header: `Debug` redacts them
/// (and the signature, which authorises the request), and both are zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature {
    pub canonical_query: String,
    pub canonical_request: String,
    pub hashed_canonical_request: String,
    pub string_to_sign: String,
    pub signed_headers: String,
    pub signature: String,
    pub authorization: String,
}

impl std::fmt::Debug for SigningRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |pairs: &[(String, String)]| -> Vec<String> {
            pairs.iter().map(|(k, _)| k.clone()).collect()
        };
        f.debug_struct("SigningRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query_names", &names(self.query))
            .field("header_names", &names(self.headers))
            .field("payload_hash", &self.payload_hash)
            .finish()
    }
}

const REDACTED: &str = "<redacted>";

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signature")
            .field("canonical_query", &REDACTED)
            .field("canonical_request", &REDACTED)
            .field("hashed_canonical_request", &self.hashed_canonical_request)
            .field("string_to_sign", &self.string_to_sign)
            .field("signed_headers", &self.signed_headers)
            .field("signature", &REDACTED)
            .field("authorization", &REDACTED)
            .finish()
    }
}

impl Drop for Signature {
    fn drop(&mut self) {
        self.canonical_query.zeroize();
        self.canonical_request.zeroize();
    }
}

/// Sign `request` with the key pair. `access_key_secret` is only used as the HMAC key.
pub fn sign(
    access_key_id: &str,
    access_key_secret: &str,
    request: &SigningRequest<'_>,
) -> Signature {
    let canonical_query = canonical_query(request.query);
    let (headers_block, signed_headers) = canonical_headers(request.headers);
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        request.path,
        canonical_query,
        headers_block,
        signed_headers,
        request.payload_hash
    );
    let hashed_canonical_request = sha256_hex(canonical_request.as_bytes());
    let string_to_sign = format!("{ALGORITHM}\n{hashed_canonical_request}");
    let signature = hmac_sha256_hex(access_key_secret.as_bytes(), string_to_sign.as_bytes());
    let authorization = format!(
        "{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}"
    );
    Signature {
        canonical_query,
        canonical_request,
        hashed_canonical_request,
        string_to_sign,
        signed_headers,
        signature,
        authorization,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn oos_headers(action: &str) -> Vec<(String, String)> {
        owned(&[
            ("host", "oos.cn-hangzhou.aliyuncs.com"),
            ("x-acs-action", action),
            ("x-acs-version", "2019-06-01"),
            ("x-acs-date", "2026-01-02T03:04:05Z"),
            ("x-acs-signature-nonce", "0123456789abcdef0123456789abcdef"),
            ("x-acs-content-sha256", EMPTY_PAYLOAD_HASH),
        ])
    }

    const SIX: &str =
        "host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version";

    #[allow(clippy::too_many_arguments)]
    fn check(
        ak: &str,
        sk: &str,
        query: &[(&str, &str)],
        headers: Vec<(String, String)>,
        expect_query: &str,
        expect_canonical: &str,
        expect_hash: &str,
        expect_sig: &str,
    ) {
        let q = owned(query);
        let sig = sign(
            ak,
            sk,
            &SigningRequest {
                method: "POST",
                path: "/",
                query: &q,
                headers: &headers,
                payload_hash: EMPTY_PAYLOAD_HASH,
            },
        );
        assert_eq!(sig.canonical_query, expect_query);
        assert_eq!(sig.canonical_request, expect_canonical);
        assert_eq!(sig.hashed_canonical_request, expect_hash);
        assert_eq!(
            sig.string_to_sign,
            format!("ACS3-HMAC-SHA256\n{expect_hash}")
        );
        assert_eq!(sig.signature, expect_sig);
        assert_eq!(
            sig.authorization,
            format!(
                "ACS3-HMAC-SHA256 Credential={ak},SignedHeaders={},Signature={expect_sig}",
                sig.signed_headers
            )
        );
    }

    #[test]
    fn empty_hash_constant() {
        assert_eq!(sha256_hex(b""), EMPTY_PAYLOAD_HASH);
    }

    #[test]
    fn doc_runinstances() {
        let headers = owned(&[
            ("host", "ecs.cn-shanghai.aliyuncs.com"),
            ("x-acs-action", "RunInstances"),
            ("x-acs-version", "2014-05-26"),
            ("x-acs-date", "2023-10-26T10:22:32Z"),
            ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
            ("x-acs-content-sha256", EMPTY_PAYLOAD_HASH),
        ]);
        let query =
            "ImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai";
        let canonical = format!(
            "POST\n/\n{query}\nhost:ecs.cn-shanghai.aliyuncs.com\nx-acs-action:RunInstances\n\
             x-acs-content-sha256:{EMPTY_PAYLOAD_HASH}\nx-acs-date:2023-10-26T10:22:32Z\n\
             x-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\nx-acs-version:2014-05-26\n\n\
             {SIX}\n{EMPTY_PAYLOAD_HASH}"
        );
        check(
            "YourAccessKeyId",
            "YourAccessKeySecret",
            // Deliberately out of order: the signer sorts.
            &[
                ("RegionId", "cn-shanghai"),
                (
                    "ImageId",
                    "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd",
                ),
            ],
            headers,
            query,
            &canonical,
            "7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259",
            "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0",
        );
    }

    fn oos_canonical(query: &str, action: &str) -> String {
        format!(
            "POST\n/\n{query}\nhost:oos.cn-hangzhou.aliyuncs.com\nx-acs-action:{action}\n\
             x-acs-content-sha256:{EMPTY_PAYLOAD_HASH}\nx-acs-date:2026-01-02T03:04:05Z\n\
             x-acs-signature-nonce:0123456789abcdef0123456789abcdef\nx-acs-version:2019-06-01\n\n\
             {SIX}\n{EMPTY_PAYLOAD_HASH}"
        )
    }

    const CREATE_CONFIG: &str = r#"{"DingTalkClientId":"ding abc*~/+","DingTalkClientSecret":"s3cr3t","DingTalkTemplateId":"tpl-1.schema"}"#;
    const CREATE_QUERY: &str = "Configuration=%7B%22DingTalkClientId%22%3A%22ding%20abc%2A~%2F%2B%22%2C%22DingTalkClientSecret%22%3A%22s3cr3t%22%2C%22DingTalkTemplateId%22%3A%22tpl-1.schema%22%7D&Name=chatops-1&RamRole=OOSServiceRole&RegionId=cn-hangzhou&Type=DingTalk";

    #[test]
    fn oos_create() {
        check(
            "testAccessKeyId",
            "testAccessKeySecret",
            &[
                ("RegionId", "cn-hangzhou"),
                ("Name", "chatops-1"),
                ("Type", "DingTalk"),
                ("RamRole", "OOSServiceRole"),
                ("Configuration", CREATE_CONFIG),
            ],
            oos_headers("CreateChatConfiguration"),
            CREATE_QUERY,
            &oos_canonical(CREATE_QUERY, "CreateChatConfiguration"),
            "719b5a3241a240801f1add0d412420cd536c4a6dcc1d79d037dbb22c16c2a1b9",
            "8a655c91999744adf295d8f7e1c3a9b5c29e3a4691cce2f3208baf34a33b717d",
        );
    }

    #[test]
    fn oos_list() {
        let query = "Filters.1.Name=Type&Filters.1.Value=DingTalk&Filters.2.Name=Name&Filters.2.Value=chat%20ops&MaxResults=10&NextToken=AQEBARoBBgEAAgIBBQ%3D%3D&RegionId=cn-hangzhou";
        check(
            "testAccessKeyId",
            "testAccessKeySecret",
            &[
                ("RegionId", "cn-hangzhou"),
                ("Filters.1.Name", "Type"),
                ("Filters.1.Value", "DingTalk"),
                ("Filters.2.Name", "Name"),
                ("Filters.2.Value", "chat ops"),
                ("MaxResults", "10"),
                ("NextToken", "AQEBARoBBgEAAgIBBQ=="),
            ],
            oos_headers("ListChatConfigurations"),
            query,
            &oos_canonical(query, "ListChatConfigurations"),
            "b6f45e27b5a438236f61a8e456096f099da18cbf708d6a2c88174d205702ca9d",
            "93f6cd5b520ef4b6a78d8e095269af305f4e0a3411948dbcb492724ba3056a9a",
        );
    }

    #[test]
    fn oos_delete() {
        check(
            "testAccessKeyId",
            "testAccessKeySecret",
            &[("Name", "chatops-1")],
            oos_headers("DeleteChatConfiguration"),
            "Name=chatops-1",
            &oos_canonical("Name=chatops-1", "DeleteChatConfiguration"),
            "f8e2fcbcabcee7d9a592db0c2a54a8dad8b13f1a5e8f32080b122e760ed7b94c",
            "d7d7ae775d5ddbce86132cdf4532ae410d23c7219fd4396579c057888b81af40",
        );
    }

    /// The raw request captured from the Python SDK (sdk-wire-create.txt): it also signs
    /// accept, user-agent and x-acs-credentials-provider, and the host carries a port.
    #[test]
    fn sdk_wire_create() {
        let headers = owned(&[
            ("host", "127.0.0.1:45449"),
            ("x-acs-version", "2019-06-01"),
            ("x-acs-action", "CreateChatConfiguration"),
            (
                "user-agent",
                "AlibabaCloud (Fixed; x86_64) Python/3.11 Core/0.4.3 TeaDSL/2",
            ),
            ("x-acs-date", "2026-01-02T03:04:05Z"),
            ("x-acs-signature-nonce", "nonce-0001"),
            ("accept", "application/json"),
            ("x-acs-content-sha256", EMPTY_PAYLOAD_HASH),
            ("x-acs-credentials-provider", "static_ak"),
        ]);
        let q = owned(&[
            ("Configuration", CREATE_CONFIG),
            ("Name", "chatops-1"),
            ("RamRole", "OOSServiceRole"),
            ("RegionId", "cn-hangzhou"),
            ("Type", "DingTalk"),
        ]);
        let sig = sign(
            "testAccessKeyId",
            "testAccessKeySecret",
            &SigningRequest {
                method: "POST",
                path: "/",
                query: &q,
                headers: &headers,
                payload_hash: EMPTY_PAYLOAD_HASH,
            },
        );
        assert_eq!(
            sig.authorization,
            "ACS3-HMAC-SHA256 Credential=testAccessKeyId,SignedHeaders=accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-credentials-provider;x-acs-date;x-acs-signature-nonce;x-acs-version,Signature=9521209976c3fd3433f2c47687464cdf47d2b22ccfb8d57a79bdb527c0583d36"
        );
        assert_eq!(sig.canonical_query, CREATE_QUERY);
    }

    #[test]
    fn percent_encoding_edge_cases() {
        assert_eq!(percent_encode("a b"), "a%20b");
        assert_eq!(percent_encode("a+b"), "a%2Bb");
        assert_eq!(percent_encode("*"), "%2A");
        assert_eq!(percent_encode("~"), "~");
        assert_eq!(percent_encode("/"), "%2F");
        assert_eq!(percent_encode("="), "%3D");
        assert_eq!(percent_encode("中"), "%E4%B8%AD");
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(percent_encode("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(percent_encode("%"), "%25");
        assert_eq!(percent_encode(""), "");
    }

    /// Every ASCII character and a few multi-byte ones against the RFC 3986 rule written out.
    #[test]
    fn percent_encoding_exhaustive_ascii() {
        for b in 0u8..128 {
            let c = b as char;
            let expected = if c.is_ascii_alphanumeric() || "-_.~".contains(c) {
                c.to_string()
            } else {
                format!("%{b:02X}")
            };
            assert_eq!(percent_encode(&c.to_string()), expected, "byte {b}");
        }
        assert_eq!(percent_encode("\u{7f}\u{80}\u{ff}"), "%7F%C2%80%C3%BF");
        assert_eq!(percent_encode("😀"), "%F0%9F%98%80");
    }

    #[test]
    fn canonical_query_sorts_as_strings_and_keeps_empty_values() {
        let q = owned(&[
            ("Filters.2.Name", "b"),
            ("Filters.10.Name", "c"),
            ("Filters.1.Name", "a"),
            ("Empty", ""),
            ("Dup", "z"),
            ("Dup", "y"),
        ]);
        assert_eq!(
            canonical_query(&q),
            "Dup=y&Dup=z&Empty=&Filters.1.Name=a&Filters.10.Name=c&Filters.2.Name=b"
        );
        assert_eq!(canonical_query::<&str, &str>(&[]), "");
    }

    #[test]
    fn canonical_headers_lowercase_trim_and_merge() {
        let (block, signed) = canonical_headers(&[
            ("X-Acs-B", "  two "),
            ("host", "h:8080"),
            ("x-acs-b", "one"),
            ("X-ACS-SECURITY-TOKEN", "a+b/c="),
        ]);
        assert_eq!(
            block,
            "host:h:8080\nx-acs-b:one,two\nx-acs-security-token:a+b/c=\n"
        );
        assert_eq!(signed, "host;x-acs-b;x-acs-security-token");
    }

    #[test]
    fn secret_only_changes_signature() {
        let q = owned(&[("Name", "x")]);
        let h = oos_headers("GetChatConfiguration");
        let req = SigningRequest {
            method: "POST",
            path: "/",
            query: &q,
            headers: &h,
            payload_hash: EMPTY_PAYLOAD_HASH,
        };
        let a = sign("id", "secret-a", &req);
        let b = sign("id", "secret-b", &req);
        assert_eq!(a.canonical_request, b.canonical_request);
        assert_ne!(a.signature, b.signature);
        assert!(!format!("{a:?}").contains("secret-a"));
    }

    /// The canonical query and request carry every value (a ClientSecret, an STS token):
    /// neither the signature's nor the signing request's Debug shows them.
    #[test]
    fn debug_redacts_signed_material() {
        let q = owned(&[("Configuration", r#"{"DingTalkClientSecret":"TOPSECRET-Q"}"#)]);
        let mut h = oos_headers("CreateChatConfiguration");
        h.push(("x-acs-security-token".into(), "TOPSECRET-T".into()));
        let req = SigningRequest {
            method: "POST",
            path: "/",
            query: &q,
            headers: &h,
            payload_hash: EMPTY_PAYLOAD_HASH,
        };
        let sig = sign("id", "TOPSECRET-K", &req);
        assert!(sig.canonical_request.contains("TOPSECRET-Q"));
        for text in [
            format!("{sig:?}"),
            format!("{sig:#?}"),
            format!("{req:?}"),
            format!("{req:#?}"),
        ] {
            assert!(!text.contains("TOPSECRET"), "{text}");
            assert!(!text.contains(&sig.signature), "{text}");
        }
        assert!(format!("{req:?}").contains("Configuration"));
        assert!(format!("{sig:?}").contains(&sig.signed_headers));
    }
}
