//! Kubernetes operator for Alibaba Cloud OOS chat configurations.
