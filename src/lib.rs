//! Kubernetes operator for Alibaba Cloud OOS chat configurations.
//!
//! - [`crd`]: the `ChatConfiguration` custom resource types (no I/O).
//! - [`oos`]: the OOS client (pure V3 signer, typed actions, credentials, retries).
//! - [`reconcile`]: the controller: observe → plan (pure) → act → status.
//! - [`operator`]: flags and wiring of the operator's default command.
//! - [`emulator`]: a local OOS chat-configuration service with Alibaba's gateway checks.

pub mod cli;
pub mod crd;
pub mod emulator;
pub mod metrics;
pub mod oos;
pub mod operator;
pub mod reconcile;
pub mod secret;
