//! `oos-emulator`: run the local OOS chat-configuration emulator. See docs/emulator.md.

use anyhow::Context as _;
use clap::Parser;
use oos_emulator::{self as emulator, AccessKey, EmulatorConfig, FaultConfig};
use serde::Deserialize;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Local emulator of the Alibaba Cloud OOS chat-configuration API (2019-06-01) with the gateway's
/// V3 signature checks and an STS AssumeRoleWithOIDC stub.
#[derive(Parser, Debug)]
#[command(name = "oos-emulator", version)]
struct Cli {
    /// API listen address (OOS actions and STS). Port 0 picks a free port; the address is printed.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Admin API listen address (off unless given).
    #[arg(long, value_name = "ADDR")]
    admin_listen: Option<SocketAddr>,
    /// Accepted access key, repeatable. The default OWNER (account id) is 1234567890123456.
    #[arg(long = "access-key", value_name = "ID:SECRET[:OWNER]", value_parser = AccessKey::parse_spec)]
    access_keys: Vec<AccessKey>,
    /// Accepted STS key whose requests must carry and sign this security token, repeatable.
    #[arg(long = "sts-key", value_name = "ID:SECRET:TOKEN[:OWNER]", value_parser = AccessKey::parse_sts_spec)]
    sts_keys: Vec<AccessKey>,
    /// JSON config file (keys, faults, options); flags override it. Keeps secrets off the command line.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// JSON state file, loaded at start and rewritten atomically after every change.
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// Region used when a request has no RegionId.
    #[arg(long, value_name = "REGION")]
    default_region: Option<String>,
    /// Turn off the ±15-minute x-acs-date check (for replaying captured requests).
    #[arg(long)]
    no_date_window: bool,
    /// Answer UpdateChatConfiguration with the documented zone-less UpdatedDate.
    #[arg(long)]
    zoneless_update_date: bool,
    /// File holding the only OIDC token the STS stub accepts.
    #[arg(long, value_name = "FILE")]
    expected_oidc_token_file: Option<PathBuf>,
}

/// `--config` file format.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    access_keys: Vec<AccessKey>,
    state_file: Option<PathBuf>,
    default_region: Option<String>,
    /// Seconds; `0` turns the check off.
    date_window_secs: Option<u64>,
    zoneless_update_date: bool,
    expected_oidc_token: Option<String>,
    faults: FaultConfig,
}

fn build_config(cli: Cli) -> anyhow::Result<EmulatorConfig> {
    let file: ConfigFile = match &cli.config {
        Some(p) => {
            let text = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", p.display()))?
        }
        None => ConfigFile::default(),
    };
    let mut c = EmulatorConfig::default();
    if let Some(l) = cli.listen.or(file.listen) {
        c.listen = l;
    }
    c.admin_listen = cli.admin_listen.or(file.admin_listen);
    c.access_keys = file.access_keys;
    c.access_keys.extend(cli.access_keys);
    c.access_keys.extend(cli.sts_keys);
    c.state_file = cli.state_file.or(file.state_file);
    if let Some(r) = cli.default_region.or(file.default_region) {
        c.default_region = r;
    }
    match file.date_window_secs {
        Some(0) => c.date_window = None,
        Some(s) => c.date_window = Some(Duration::from_secs(s)),
        None => {}
    }
    if cli.no_date_window {
        c.date_window = None;
    }
    c.zoneless_update_date = cli.zoneless_update_date || file.zoneless_update_date;
    c.expected_oidc_token = match cli.expected_oidc_token_file {
        Some(p) => Some(
            std::fs::read_to_string(&p)
                .with_context(|| format!("reading {}", p.display()))?
                .trim()
                .to_string(),
        ),
        None => file.expected_oidc_token,
    };
    c.faults = file.faults;
    Ok(c)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let config = build_config(Cli::parse())?;
    let keys: Vec<String> = config
        .access_keys
        .iter()
        .map(|k| {
            let kind = if k.security_token.is_some() {
                "sts, "
            } else {
                ""
            };
            format!("{} ({kind}owner {})", k.id, k.owner)
        })
        .collect();
    let running = emulator::start(config).await?;
    {
        // Addresses and key ids only: never a secret or token.
        let mut out = std::io::stdout().lock();
        writeln!(out, "oos-emulator listening on {}", running.endpoint())?;
        if let Some(a) = running.admin_url() {
            writeln!(out, "oos-emulator admin on {a}")?;
        }
        if keys.is_empty() {
            writeln!(
                out,
                "oos-emulator access keys: none (only the STS stub can issue keys)"
            )?;
        } else {
            writeln!(out, "oos-emulator access keys: {}", keys.join(", "))?;
        }
        out.flush()?;
    }
    wait_for_signal().await;
    running.shutdown().await;
    Ok(())
}
