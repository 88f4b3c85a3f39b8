//! Kubernetes operator for Alibaba Cloud OOS chat configurations.
pub mod emulator;
