//! Command-line subcommands.
pub mod export;
pub mod remote;
