//! `remote` subcommands: read chat configurations straight from OOS with the default
//! credential chain. Secrets are always printed as `******` (`list`, `get`) or not at all
//! (`export`, see [`super::export`]).

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::export::{ExportArgs, run_export};

use oos_client::{
    ChatConfiguration, ChatConfigurationSummary, ClientConfig, Endpoint, Filter, OosClient,
    Outputs, RemoteDate, TokenBucket, default_chain,
};

#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    #[command(subcommand)]
    pub command: RemoteCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum RemoteCommand {
    /// List chat configurations (all pages).
    List(ListArgs),
    /// Show one chat configuration.
    Get(GetArgs),
    /// Print ChatConfiguration manifests (and Secret stubs) that adopt the existing remote
    /// configurations, as multi-document YAML for a Git repository.
    Export(ExportArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

/// Options shared by every `remote` subcommand.
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Region, e.g. cn-hangzhou (selects oos.<region>.aliyuncs.com and is sent as RegionId).
    #[arg(long, env = "ALIBABA_CLOUD_REGION_ID")]
    pub region: String,
    /// Full endpoint URL override, e.g. http://127.0.0.1:8080 (the emulator).
    #[arg(long, conflicts_with = "vpc")]
    pub endpoint: Option<String>,
    /// Use the VPC endpoint oos-vpc.<region>.aliyuncs.com.
    #[arg(long)]
    pub vpc: bool,
    /// Per-attempt HTTP timeout in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Filter as Name=Value (repeatable; sent as Filters.N.Name / Filters.N.Value).
    #[arg(long = "filter", value_name = "NAME=VALUE", value_parser = parse_filter)]
    pub filters: Vec<Filter>,
    /// Page size (MaxResults); all pages are fetched regardless.
    #[arg(long)]
    pub max_results: Option<u32>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// Name of the chat configuration.
    pub name: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

pub(crate) fn parse_filter(s: &str) -> Result<Filter, String> {
    match s.split_once('=') {
        Some((n, v)) if !n.is_empty() => Ok(Filter {
            name: n.to_owned(),
            value: v.to_owned(),
        }),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

pub(crate) fn client(conn: &ConnectionArgs) -> anyhow::Result<OosClient> {
    let endpoint = match (&conn.endpoint, conn.vpc) {
        (Some(u), _) => Endpoint::Url(u.clone()),
        (None, true) => Endpoint::Vpc,
        (None, false) => Endpoint::Public,
    };
    let mut config = ClientConfig::new(endpoint);
    config.timeout = Duration::from_secs(conn.timeout.max(1));
    config.rate_limiter = TokenBucket::new(10.0, 10);
    config.user_agent_suffix = Some("cli".into());
    Ok(OosClient::new(config, default_chain()?)?)
}

/// Entry point of `oos-chat-operator remote …`.
pub async fn run_remote(args: RemoteArgs) -> anyhow::Result<()> {
    let text = match &args.command {
        RemoteCommand::List(a) => {
            let items = client(&a.connection)?
                .list_chat_configurations(&a.connection.region, &a.filters, a.max_results)
                .await?;
            render_list(&items, a.output)
        }
        RemoteCommand::Get(a) => {
            let item = client(&a.connection)?
                .get_chat_configuration(&a.connection.region, &a.name)
                .await?;
            render_get(&item, a.output)
        }
        RemoteCommand::Export(a) => return run_export(a).await,
    };
    println!("{text}");
    Ok(())
}

fn date(d: &Option<RemoteDate>) -> Value {
    d.map(|d| Value::String(d.to_rfc3339()))
        .unwrap_or(Value::Null)
}

fn outputs_json(o: &Option<Outputs>) -> Value {
    o.as_ref().map(|o| o.masked_json()).unwrap_or(Value::Null)
}

/// JSON form of a List item, secrets masked.
pub fn summary_json(s: &ChatConfigurationSummary) -> Value {
    json!({
        "Name": s.name,
        "Type": s.chat_type.as_str(),
        "RamRole": s.ram_role,
        "Outputs": outputs_json(&s.outputs),
        "CreatedDate": date(&s.created_date),
        "UpdatedDate": date(&s.updated_date),
    })
}

/// JSON form of a Get result, secrets masked (Configuration and Outputs as objects).
pub fn configuration_json(c: &ChatConfiguration) -> Value {
    let cfg = c
        .configuration
        .as_ref()
        .map(|s| s.masked_json())
        .unwrap_or(Value::Null);
    json!({
        "Name": c.name,
        "Type": c.chat_type.as_str(),
        "RamRole": c.ram_role,
        "ResourceGroupId": c.resource_group_id,
        "Configuration": cfg,
        "Outputs": outputs_json(&c.outputs),
        "CreatedDate": date(&c.created_date),
        "UpdatedDate": date(&c.updated_date),
    })
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn render_list(items: &[ChatConfigurationSummary], format: OutputFormat) -> String {
    let rows: Vec<Value> = items.iter().map(summary_json).collect();
    if format == OutputFormat::Json {
        return serde_json::to_string_pretty(&rows).unwrap_or_default();
    }
    let header = ["NAME", "TYPE", "RAM ROLE", "URL", "UPDATED"];
    let mut table: Vec<[String; 5]> = vec![header.map(String::from)];
    for r in &rows {
        table.push([
            cell(&r["Name"]),
            cell(&r["Type"]),
            cell(&r["RamRole"]),
            cell(&r["Outputs"]["URL"]),
            cell(&r["UpdatedDate"]),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    table
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn render_get(item: &ChatConfiguration, format: OutputFormat) -> String {
    let v = configuration_json(item);
    if format == OutputFormat::Json {
        return serde_json::to_string_pretty(&v).unwrap_or_default();
    }
    let mut out = Vec::new();
    for k in [
        "Name",
        "Type",
        "RamRole",
        "ResourceGroupId",
        "CreatedDate",
        "UpdatedDate",
    ] {
        out.push(format!("{k}: {}", cell(&v[k])));
    }
    for k in ["Configuration", "Outputs"] {
        match &v[k] {
            Value::Object(m) => {
                out.push(format!("{k}:"));
                for (mk, mv) in m {
                    out.push(format!("  {mk}: {}", cell(mv)));
                }
            }
            _ => out.push(format!("{k}: -")),
        }
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use oos_client::{ChatSettings, ChatType, parse_remote_date};

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(subcommand)]
        cmd: Top,
    }
    #[derive(Subcommand, Debug)]
    enum Top {
        Remote(RemoteArgs),
    }

    fn parse(args: &[&str]) -> Result<RemoteCommand, clap::Error> {
        TestCli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|c| {
            match c.cmd {
                Top::Remote(r) => r.command,
            }
        })
    }

    #[test]
    fn flags() {
        let RemoteCommand::List(l) = parse(&[
            "remote",
            "list",
            "--region",
            "cn-hangzhou",
            "--filter",
            "Type=DingTalk",
            "--filter",
            "Name=a=b",
            "--endpoint",
            "http://127.0.0.1:1",
            "-o",
            "json",
        ])
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            l.filters,
            vec![
                Filter {
                    name: "Type".into(),
                    value: "DingTalk".into()
                },
                Filter {
                    name: "Name".into(),
                    value: "a=b".into()
                }
            ]
        );
        assert_eq!(l.output, OutputFormat::Json);
        assert_eq!(l.connection.endpoint.as_deref(), Some("http://127.0.0.1:1"));
        let RemoteCommand::Get(g) = parse(&["remote", "get", "chatops", "--region", "r1"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (g.name.as_str(), g.output),
            ("chatops", OutputFormat::Table)
        );
        assert!(parse(&["remote", "list", "--region", "r", "--filter", "novalue"]).is_err());
        assert!(
            parse(&[
                "remote",
                "list",
                "--region",
                "r",
                "--vpc",
                "--endpoint",
                "http://x"
            ])
            .is_err()
        );
    }

    fn sample() -> ChatConfiguration {
        ChatConfiguration {
            name: "wecom".into(),
            chat_type: ChatType::WeChat,
            ram_role: Some("OOSServiceRole".into()),
            resource_group_id: None,
            configuration: Some(
                ChatSettings::from_json_str(r#"{"DingTalkClientId":"cid","DingTalkClientSecret":"LEAK1","CorpSecret":"LEAK2","Mode":"x","DbPasswd":"LEAK4","PrivateKey":"LEAK5","Credential":"LEAK6"}"#)
                    .unwrap(),
            ),
            outputs: Some(Outputs::from_json_str(r#"{"URL":"https://h/webhook/","AesKey":"LEAK3"}"#).unwrap()),
            created_date: parse_remote_date("2025-12-11T13:49:10+00:00"),
            updated_date: None,
        }
    }

    #[test]
    fn output_masks_secrets() {
        let c = sample();
        let s = ChatConfigurationSummary {
            name: c.name.clone(),
            chat_type: c.chat_type.clone(),
            ram_role: c.ram_role.clone(),
            outputs: c.outputs.clone(),
            created_date: c.created_date,
            updated_date: c.updated_date,
        };
        for text in [
            render_get(&c, OutputFormat::Table),
            render_get(&c, OutputFormat::Json),
            render_list(std::slice::from_ref(&s), OutputFormat::Table),
            render_list(std::slice::from_ref(&s), OutputFormat::Json),
        ] {
            assert!(!text.contains("LEAK"), "{text}");
        }
        let j = configuration_json(&c);
        assert_eq!(j["Configuration"]["DingTalkClientSecret"], "******");
        assert_eq!(j["Configuration"]["CorpSecret"], "******");
        assert_eq!(j["Configuration"]["Mode"], "x");
        assert_eq!(j["Configuration"]["DbPasswd"], "******");
        assert_eq!(j["Configuration"]["PrivateKey"], "******");
        assert_eq!(j["Outputs"]["AesKey"], "******");
        assert_eq!(j["Outputs"]["URL"], "https://h/webhook/");
        assert_eq!(j["CreatedDate"], "2025-12-11T13:49:10+00:00");
        let table = render_list(&[s], OutputFormat::Table);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("NAME ") && lines[1].starts_with("wecom "));
        assert!(lines[1].contains("https://h/webhook/"));
        assert!(render_get(&c, OutputFormat::Table).contains("  AesKey: ******"));
    }
}
