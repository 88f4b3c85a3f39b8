//! Kubernetes operator for Alibaba Cloud OOS chat configurations.

pub mod cli;
pub mod oos;
pub mod secret;
