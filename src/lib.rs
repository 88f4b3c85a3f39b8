//! Kubernetes operator for Alibaba Cloud OOS chat configurations.
//!
//! - [`crd`]: the `ChatConfiguration` custom resource types (no I/O).
//! - [`reconcile`]: the controller: observe → plan (pure) → act → status.
//! - [`operator`]: flags and wiring of the operator's default command.
//!
//! The OOS client is the `oos-client` crate (no Kubernetes in it); the emulator used by the
//! tests is `oos-emulator` (depends on neither, so it stays an independent referee).

pub mod cli;
pub mod crd;
pub mod http;
pub mod metrics;
pub mod operator;
pub mod reconcile;
