//! Operator binary: runs the controller by default; `remote` queries OOS directly.

use std::io::IsTerminal as _;

use clap::{Parser, Subcommand};
use oos_chat_operator::cli::remote::{RemoteArgs, run_remote};
use oos_chat_operator::operator::{RunArgs, run};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Kubernetes operator for Alibaba Cloud OOS chat configurations",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
    /// Log format: text or json.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Query OOS directly (default credential chain; secrets masked).
    Remote(RemoteArgs),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // Logs go to stderr so `remote … -o json` on stdout stays parseable.
    let default_level = if cli.command.is_some() {
        "warn"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_level.into());
    // Colour codes only for a person at a terminal, never into files or log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let result = match cli.command {
        Some(Command::Remote(args)) => run_remote(args).await,
        None => run(cli.run).await,
    };
    // Exit now: a task still blocked somewhere (a hung connection) must not hold the process
    // past the shutdown grace period.
    match result {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            // `{:#}`: the cause chain on one line, without a backtrace dump.
            eprintln!("error: {e:#}");
            std::process::exit(1)
        }
    }
}
