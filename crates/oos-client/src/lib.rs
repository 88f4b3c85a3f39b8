//! Alibaba Cloud OOS (2019-06-01) chat-configuration client. No Kubernetes code here.

// `OosError::Api` carries the whole Alibaba error body by value (the agreed public shape);
// errors are rare and never on a hot path, so boxing buys nothing here.
#![allow(clippy::result_large_err)]

pub mod client;
pub mod credentials;
pub mod error;
pub mod ratelimit;
pub mod secret;
pub mod signer;
pub mod throttle;
pub mod types;

pub use client::{
    CallEvent, CallObserver, ClientConfig, Endpoint, GATE_CLOSED_CODE, OosClient, REDIRECT_CODE,
    RetryPolicy,
};
pub use credentials::{
    CredentialProvider, Credentials, DefaultChain, OidcConfig, OidcCredentials, StaticCredentials,
    default_chain, env_credentials,
};
pub use error::{CredentialsError, OosError};
pub use ratelimit::TokenBucket;
pub use throttle::ThrottlePolicy;
pub use types::{
    ChatConfiguration, ChatConfigurationInput, ChatConfigurationStamp, ChatConfigurationSummary,
    ChatSettings, ChatType, Filter, MASKED_SECRET, Outputs, RemoteDate, is_sensitive_key,
    mask_sensitive, parse_remote_date,
};
