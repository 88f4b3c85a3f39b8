//! Operator binary. Only the `remote` subcommand lives here for now; the integrator adds the
//! controller as the default command.

use clap::{Parser, Subcommand};
use oos_chat_operator::cli::remote::{RemoteArgs, run_remote};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Kubernetes operator for Alibaba Cloud OOS chat configurations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Query OOS directly (default credential chain; secrets masked).
    Remote(RemoteArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Logs go to stderr so `-o json` output on stdout stays parseable.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Remote(args) => run_remote(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}`: the cause chain on one line, without a backtrace dump.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
