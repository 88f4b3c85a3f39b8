//! Shared helpers for integration tests. Every test file does `mod support;`.
//!
//! The main piece is a real Kubernetes control plane (etcd + kube-apiserver, no nodes),
//! started once per test binary on first use of [`control_plane()`] and torn down when the
//! test binary exits. See `controlplane.rs` for how processes are spawned and reaped.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

mod controlplane;
pub mod harness;
pub mod process;

// Not every test binary names every item.
#[allow(unused_imports)]
pub use controlplane::{
    ControlPlane, DEFAULT_K8S_VERSION, SideApiserver, base64, control_plane, eventually,
    k8s_version,
};
