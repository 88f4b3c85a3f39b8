//! Command-line subcommands.
pub mod remote;
