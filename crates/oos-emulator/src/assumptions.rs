//! Every choice the emulator makes where Alibaba publishes nothing (reference section 10), in one
//! place. `docs/emulator.md`, section "Assumptions", lists the same items with the same ids (A1…);
//! tests that depend on one cite its id.

/// A1: order of gateway checks for OOS actions. Size limits → route (method/path) →
/// `Authorization` syntax → SignedHeaders policy (A2) → required headers present → payload hash
/// (A3) → access key lookup → signature (constant time) → security token (A4) → date window →
/// nonce (recorded only now, after the signature verified) → API (action + version) → throttling
/// and injected faults → parameters → the action itself.
pub const CHECK_ORDER: &str = "limits, route, authorization, signed-headers policy, required headers, payload hash, \
access key, signature, security token, date, nonce, api, throttling/faults, parameters, action";

/// A2: a request whose `SignedHeaders` leaves out `host`, `content-type` (when sent) or any received
/// `x-acs-*` header is rejected with `IncompleteSignature`. So is a `SignedHeaders` list that is
/// not lowercase, sorted and duplicate-free, or that names a header the request does not carry.
pub const UNSIGNED_HEADER_CODE: &str = "IncompleteSignature";

/// A3: an `x-acs-content-sha256` that differs from the body's SHA-256 answers
/// `SignatureDoesNotMatch` (HTTP 400) with its own message.
pub const PAYLOAD_HASH_MISMATCH_CODE: &str = "SignatureDoesNotMatch";
pub const PAYLOAD_HASH_MISMATCH_MESSAGE: &str =
    "The x-acs-content-sha256 header does not match the SHA-256 of the request body.";

/// A4: security tokens. An STS key without `x-acs-security-token` → `MissingSecurityToken`; a token
/// that is not the one issued with the key, or a token sent with a permanent key, or an
/// `x-acs-accesskey-id` header that differs from `Credential` → `InvalidSecurityToken.MismatchWithAccessKey`;
/// an issued key past its Expiration → `InvalidSecurityToken.Expired`. All HTTP 400.
pub const MISSING_SECURITY_TOKEN_MESSAGE: &str =
    "The security token is mandatory for temporary credentials.";
pub const TOKEN_MISMATCH_MESSAGE: &str = "The security token does not match the access key.";
pub const TOKEN_EXPIRED_MESSAGE: &str = "The security token has expired.";

/// A5: the `x-acs-date` window is ±15 minutes [doc]; nonces are remembered per
/// (AccessKeyId, nonce) for 31 minutes after first use (community answer), long enough to cover
/// the whole 30-minute span in which one date is acceptable. Nonces are not persisted.
pub const DATE_WINDOW_SECS: i64 = 15 * 60;
pub const NONCE_MEMORY_SECS: i64 = 31 * 60;

/// A6: unknown `x-acs-action`, an `x-acs-version` other than 2019-06-01, a method other than
/// GET/POST, or a path other than `/` → `InvalidApi.NotFound` (404).
pub const API_VERSION: &str = "2019-06-01";

/// A7: OOS-specific codes (section 10 suggestions).
pub const NOT_FOUND_CODE: &str = "EntityNotExists.ChatConfiguration";
pub const NOT_FOUND_STATUS: u16 = 404;
pub const NOT_FOUND_MESSAGE: &str = "The specified chat configuration does not exist.";
pub const ALREADY_EXISTS_CODE: &str = "EntityAlreadyExists.ChatConfiguration";
pub const ALREADY_EXISTS_STATUS: u16 = 409;
pub const ALREADY_EXISTS_MESSAGE: &str = "The specified chat configuration already exists.";
/// Missing required parameter `X` → code `MissingX`, message `X is mandatory for this action.`;
/// an invalid value → `InvalidParameter`, message `Specified parameter X is not valid.` (+ reason).
pub const INVALID_PARAMETER_CODE: &str = "InvalidParameter";

/// A8: `Name`: 1–128 characters, each ASCII letter, digit, `.`, `_` or `-`; case-sensitive.
/// Names with spaces, `+`, `*`, `~`, `/`, quotes or non-ASCII are rejected with `InvalidParameter`.
pub const NAME_MAX_LEN: usize = 128;
pub fn name_is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A9: required parameters. Create needs `Name`, `Type`, `Configuration`; Update/Get/Delete need
/// `Name`. `RamRole` and `ResourceGroupId` are optional and not checked for existence. An empty
/// value counts as "not sent".
pub const TYPES: &[&str] = &["DingTalk", "WeChat"];
/// `RamRole`: 1–64 ASCII letters, digits, `.` or `-` (RAM's role-name rule). `ResourceGroupId`:
/// at most 64 characters of letters, digits and `-`.
pub const RAM_ROLE_MAX_LEN: usize = 64;
pub const RESOURCE_GROUP_MAX_LEN: usize = 64;
/// `RegionId`: 1–32 lowercase letters, digits and `-`. When absent, this region is used.
pub const DEFAULT_REGION: &str = "cn-hangzhou";
/// `Configuration` must be a JSON object; its keys are not checked (WeCom keys are unpublished).
pub const CONFIGURATION_MUST_BE_OBJECT: bool = true;

/// A10: Update keeps every parameter it is not given (PATCH semantics). A given `Configuration`
/// replaces the stored one whole (no merge); a literal `******` is stored as is, so clients must
/// always send real secrets. `Type` may change; Outputs keep their URL, gain an AesKey when the
/// type becomes WeChat and lose it when it becomes DingTalk.
pub const UPDATE_KEEPS_OMITTED: bool = true;

/// A11: Get masks, at any depth of `Configuration`, the value of every key ending in `Secret`.
pub const MASK: &str = "******";
pub const SECRET_KEY_SUFFIX: &str = "Secret";
/// A12: `Configuration` and `Outputs` are written like Python's `json.dumps` defaults: `", "` and
/// `": "` separators, non-ASCII as `\uXXXX` (`ensure_ascii`). Keys come back sorted.
pub const PYTHON_JSON_ENSURE_ASCII: bool = true;

/// A13: Outputs. `URL` = `https://<owner>.appflow.aliyunnest.com/webhook/<32 hex>`, unique per
/// configuration and kept for its lifetime; WeChat also gets a 43-character alphanumeric `AesKey`.
pub const WEBHOOK_HOST_SUFFIX: &str = ".appflow.aliyunnest.com/webhook/";
pub const AES_KEY_LEN: usize = 43;
/// Dates: `YYYY-MM-DDTHH:MM:SS+00:00`, whole seconds. With the option `zoneless_update_date` the
/// Update response's `UpdatedDate` uses the documented quirk `YYYY-MM-DDTHH:MM:SS.ffffff`.
pub const DATE_FORMAT: &str = "%Y-%m-%dT%H:%M:%S+00:00";
pub const ZONELESS_DATE_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6f";

/// A14: List. Supported filter names: `Name` and `Type`, exact and case-sensitive value match;
/// several filters all have to match (AND). Unknown filter names, a name without value or a
/// malformed `Filters.N.*` key → `InvalidParameter`. At most 10 filters.
pub const FILTER_NAMES: &[&str] = &["Name", "Type"];
pub const MAX_FILTERS: usize = 10;
/// `MaxResults`: default 20, 1–100, else `InvalidParameter`.
pub const MAX_RESULTS_DEFAULT: usize = 20;
pub const MAX_RESULTS_MAX: usize = 100;
/// Items are ordered by Name (byte order). `NextToken` = standard base64 (with padding) of a
/// 3-byte magic + `v1:` + last Name returned; the next page holds the names strictly greater, so
/// paging stays consistent while others write. The magic makes every token start with `+/+/`,
/// which checks that clients percent-encode `+` and `/`. `NextToken` is present only when more
/// items remain.
pub const NEXT_TOKEN_MAGIC: [u8; 3] = [0xFB, 0xFF, 0xBF];
pub const NEXT_TOKEN_VERSION: &str = "v1:";

/// A15: Delete answers this `Content` [doc example].
pub const DELETE_CONTENT: &str = "Chat configuration deleted successfully.";

/// A16: limits. A query longer than 64 KiB or a body longer than 64 KiB → `InvalidParameter` (400).
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A17: owner (account id) of an access key configured without one.
pub const DEFAULT_OWNER: &str = "1234567890123456";

/// A18: STS stub. `DurationSeconds` 900–43200 (default 3600). `RoleSessionName` is required.
/// The OIDC token is trimmed, then must be 4–20000 characters; it is not verified as a JWT unless
/// an expected token is configured. The provider ARN's account must equal the role ARN's.
/// Missing parameter `X` → `MissingX`; invalid → `InvalidParameter.X`; both 400.
pub const STS_DURATION_MIN: u64 = 900;
pub const STS_DURATION_MAX: u64 = 43_200;
pub const STS_DURATION_DEFAULT: u64 = 3_600;
pub const OIDC_TOKEN_MIN: usize = 4;
pub const OIDC_TOKEN_MAX: usize = 20_000;

/// A19: /calls counts every request whose action name is one of the five OOS actions or
/// `AssumeRoleWithOIDC`, on receipt, whatever its outcome (auth failures included).
/// `/calls?by=code` counts them again by answer (`OK`, error code, `reset`, `stall`) once the
/// answer is known; a stalled request counts as `stall` when its stall starts.
/// The request log keeps the last 10,000 requests.
pub const REQUEST_LOG_CAPACITY: usize = 10_000;

/// A20: the per-account QPS limit is a fixed one-second window per owner and answers
/// `Throttling.User` (400); throttled requests do not count towards the window.
pub const THROTTLING_USER_CODE: &str = "Throttling.User";

/// A21: injected errors. A fault rule may answer any error code. A known code (reference section
/// 7.2, plus the codes this emulator answers itself) comes with the HTTP status and message below;
/// `Missing<Param>` is 400 "`<Param>` is mandatory for this action."; any other code needs an
/// explicit `http_status`. A rule's `http_status` (400–599) and `message` override the table.
/// Codes are 1–64 characters of `[A-Za-z0-9._-]`. Where sources disagree the emulator's own
/// answer wins: `SignatureDoesNotMatch` 400 (some pages say 403), `InvalidAccessKeyId.NotFound`
/// 404 (some tables say 400).
pub const KNOWN_ERROR_CODES: &[(&str, u16, &str)] = &[
    (
        "IncompleteSignature",
        400,
        "The request signature does not conform to Aliyun standards.",
    ),
    (
        "SignatureDoesNotMatch",
        400,
        "Specified signature does not match our calculation.",
    ),
    (
        "InvalidAccessKeyId.NotFound",
        404,
        "Specified access key is not found.",
    ),
    (
        "InvalidAccessKeyId.Inactive",
        400,
        "Specified access key is disabled.",
    ),
    (
        "SignatureNonceUsed",
        400,
        "Specified signature nonce was used already.",
    ),
    (
        "InvalidTimeStamp.Expired",
        400,
        "Specified time stamp or date value is expired.",
    ),
    (
        "InvalidTimeStamp.Format",
        400,
        "Specified time stamp or date value is not well formatted.",
    ),
    (
        "InvalidSignatureMethod",
        400,
        "Specified signature method is not valid.",
    ),
    ("InvalidSecurityToken.Expired", 400, TOKEN_EXPIRED_MESSAGE),
    (
        "InvalidSecurityToken.Malformed",
        400,
        "The security token is malformed.",
    ),
    (
        "InvalidSecurityToken.MismatchWithAccessKey",
        400,
        TOKEN_MISMATCH_MESSAGE,
    ),
    ("MissingSecurityToken", 400, MISSING_SECURITY_TOKEN_MESSAGE),
    (
        "InvalidApi.NotFound",
        404,
        "Specified api is not found, please check your url and method.",
    ),
    (
        "InvalidAction.NotFound",
        404,
        "Specified api is not found, please check your url and method.",
    ),
    (
        "InvalidProduct.NotFound",
        404,
        "Cannot find product according to your specified domain.",
    ),
    (
        INVALID_PARAMETER_CODE,
        400,
        "Specified parameter is not valid.",
    ),
    (
        "Throttling",
        400,
        "Request was denied due to request throttling.",
    ),
    (
        THROTTLING_USER_CODE,
        400,
        "Request was denied due to user flow control.",
    ),
    (
        "Throttling.Api",
        400,
        "Request was denied due to api flow control.",
    ),
    ("Forbidden.RAM", 403, FORBIDDEN_MESSAGE),
    ("NoPermission", 403, FORBIDDEN_MESSAGE),
    (
        INTERNAL_ERROR_CODE,
        500,
        "The request processing has failed due to some unknown error, exception or failure.",
    ),
    (
        "ServiceUnavailable",
        503,
        "The request has failed due to a temporary failure of the server.",
    ),
    (NOT_FOUND_CODE, NOT_FOUND_STATUS, NOT_FOUND_MESSAGE),
    (
        ALREADY_EXISTS_CODE,
        ALREADY_EXISTS_STATUS,
        ALREADY_EXISTS_MESSAGE,
    ),
];

const FORBIDDEN_MESSAGE: &str =
    "User not authorized to operate on the specified resource, or this API doesn't support RAM.";
pub const INTERNAL_ERROR_CODE: &str = "InternalError";
/// HTTP statuses an injected error may carry.
pub const INJECTED_STATUS_MIN: u16 = 400;
pub const INJECTED_STATUS_MAX: u16 = 599;
pub const ERROR_CODE_MAX_LEN: usize = 64;

/// Status and message of a known code (table above, or the `Missing<Param>` family).
pub fn known_error(code: &str) -> Option<(u16, String)> {
    if let Some((_, status, message)) = KNOWN_ERROR_CODES.iter().find(|(c, ..)| *c == code) {
        return Some((*status, (*message).to_string()));
    }
    let param = code.strip_prefix("Missing").filter(|p| !p.is_empty())?;
    Some((400, format!("{param} is mandatory for this action.")))
}

/// `Message` of an injected code that has no known message.
pub fn generic_error_message(code: &str) -> String {
    format!("The request processing has failed with error {code}.")
}

/// Whether `code` can be an error code: 1–64 of `[A-Za-z0-9._-]`.
pub fn error_code_is_valid(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= ERROR_CODE_MAX_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A22: masking in the emulator's own admin output (request log, `GET /state`), the project's one
/// rule: a JSON key (or request parameter name) is sensitive iff its ASCII-lowercase form contains
/// one of these; its value, of any JSON type, becomes [`MASK`], at every depth of nested objects
/// and arrays. (A11 is what the modelled service masks in Get; it is a separate rule.)
pub const SENSITIVE_KEY_PARTS: &[&str] = &[
    "secret",
    "token",
    "password",
    "passwd",
    "aeskey",
    "privatekey",
    "credential",
];

/// Whether `key` is sensitive by [`SENSITIVE_KEY_PARTS`].
pub fn is_sensitive_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    SENSITIVE_KEY_PARTS.iter().any(|p| lower.contains(p))
}
