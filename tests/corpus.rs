//! The bad-input corpus: every `tests/corpus/*.yaml` is one case (the objects to apply, optional
//! emulator faults and later steps, the expected outcome), run against the real control plane,
//! the emulator and the controller. A case ends in exactly one of two ways:
//!
//! - `admission`: the last object is refused by the apiserver, in every way a client submits
//!   it (create with strict field validation as `kubectl apply` does, create with the default
//!   validation as client-go and Helm do, server-side apply as `kubectl apply --server-side`
//!   and Flux do), with a message naming the field;
//! - `condition`: the object is accepted and reports the named reason with Ready=False and the
//!   kstatus pair the reason implies (Stalled, or Reconciling), the message naming the problem,
//!   exactly one Warning event, and no remote write (Create/Update/Delete in the emulator's
//!   request log) but the refused ones the case injects.
//!
//! Either way a healthy object created afterwards in the same namespace still becomes Ready, so
//! the controller survived the case. Cases run in parallel, each with its own namespace,
//! emulator and controller (so a fault rule touches only its case). See README.md "Bad-input
//! corpus" for the file format and how to add a case.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::Request;
use oos_chat_operator::crd::ChatConfiguration;
use oos_emulator::FaultRule;
use serde::Deserialize;
use serde_json::{Value, json};
use support::harness::*;

/// Cases running at once (each a namespace, an emulator and a controller).
const PARALLEL: usize = 12;
/// How long a case may take to reach its condition.
const CONDITION_TIMEOUT: Duration = Duration::from_secs(45);
/// After the condition and its event: how long nothing more may happen.
const SETTLE: Duration = Duration::from_secs(3);
const WRITES: [&str; 3] = [
    "CreateChatConfiguration",
    "UpdateChatConfiguration",
    "DeleteChatConfiguration",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    /// What is wrong, in a sentence.
    description: String,
    /// Emulator fault rules installed before anything is applied (e.g. the service refusing).
    #[serde(default)]
    faults: Vec<FaultRule>,
    /// Applied in order; `!repeat` and `!keys` tags generate big values (see `expand`).
    objects: Vec<serde_yaml::Value>,
    /// Run once the object is Ready, e.g. a Secret deleted while in use.
    #[serde(default)]
    steps: Vec<Step>,
    expect: Expect,
}

/// One of: `deleteSecret: NAME`, `removeKey: {secret: NAME, key: KEY}`, `apply: OBJECT`
/// (server-side applied, e.g. a Secret with a new value).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Step {
    delete_secret: Option<String>,
    remove_key: Option<RemoveKey>,
    apply: Option<serde_yaml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveKey {
    secret: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Expect {
    /// The last object is refused at admission; every text must be in the message.
    admission: Option<Texts>,
    /// Server-side apply's own wording when it differs (type errors come from its typed patch).
    server_side: Option<Texts>,
    /// The ways of submitting that must refuse it (default: all three).
    modes: Option<Vec<Mode>>,
    condition: Option<ConditionExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConditionExpect {
    reason: String,
    /// `Stalled` (needs a human) or `Reconciling` (waits for something that may come by itself).
    kstatus: Kstatus,
    message_contains: Texts,
    /// Remote write attempts the service refuses (injected faults); none is ever accepted.
    #[serde(default)]
    refused_writes: usize,
    /// The ChatConfiguration to watch, when the case has several.
    object: Option<String>,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq)]
enum Kstatus {
    Stalled,
    Reconciling,
}

#[derive(Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
enum Mode {
    /// POST with `fieldValidation=Strict` (`kubectl apply`, `kubectl create`).
    Strict,
    /// POST with the server's default validation (client-go, Helm: unknown fields pruned).
    Default,
    /// Server-side apply (`kubectl apply --server-side`, Flux).
    ServerSide,
}

const ALL_MODES: [Mode; 3] = [Mode::Strict, Mode::Default, Mode::ServerSide];

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Texts {
    One(String),
    Many(Vec<String>),
}

impl Texts {
    fn all(&self) -> Vec<String> {
        match self {
            Texts::One(s) => vec![s.clone()],
            Texts::Many(v) => v.clone(),
        }
    }

    fn missing_from(&self, message: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|t| !message.contains(t.as_str()))
            .collect()
    }
}

struct Case {
    name: String,
    file: CaseFile,
    objects: Vec<Value>,
}

/// Turns YAML into JSON, generating the tagged values:
/// - `!repeat {text: T, times: N}`: T repeated N times (huge values without huge files);
/// - `!keys {count: N, prefix: P, value: V}`: a map of N keys `P0`…`P{N-1}`, each V.
fn expand(v: &serde_yaml::Value) -> anyhow::Result<Value> {
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => json!(b),
        Y::Number(n) => serde_json::to_value(n)?,
        Y::String(s) => json!(s),
        Y::Sequence(items) => Value::Array(items.iter().map(expand).collect::<Result<_, _>>()?),
        Y::Mapping(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let k = match k {
                    Y::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)?.trim().to_string(),
                };
                out.insert(k, expand(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => {
            let arg = expand(&t.value)?;
            let int = |f: &str| {
                arg[f]
                    .as_u64()
                    .ok_or_else(|| anyhow::anyhow!("!{} needs an integer {f}", t.tag))
            };
            let text = |f: &str| {
                arg[f]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| anyhow::anyhow!("!{} needs a string {f}", t.tag))
            };
            match t.tag.to_string().trim_start_matches('!') {
                "repeat" => json!(text("text")?.repeat(int("times")? as usize)),
                "keys" => {
                    let prefix = text("prefix")?;
                    Value::Object(
                        (0..int("count")?)
                            .map(|i| (format!("{prefix}{i}"), arg["value"].clone()))
                            .collect(),
                    )
                }
                other => anyhow::bail!("unknown tag !{other}"),
            }
        }
    })
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus")
}

fn load_cases() -> Vec<Case> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/corpus exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(&p).unwrap();
            let file: CaseFile =
                serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let objects = file
                .objects
                .iter()
                .map(expand)
                .collect::<anyhow::Result<Vec<_>>>()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let e = &file.expect;
            assert!(
                e.admission.is_some() != e.condition.is_some(),
                "{name}: expect exactly one of admission and condition"
            );
            assert!(
                e.admission.is_none() || file.steps.is_empty(),
                "{name}: steps run only before a condition"
            );
            assert!(!objects.is_empty(), "{name}: no objects");
            Case {
                name,
                file,
                objects,
            }
        })
        .collect()
}

fn is_chat_configuration(obj: &Value) -> bool {
    obj["kind"] == "ChatConfiguration"
}

fn collection_path(ns: &str, obj: &Value) -> String {
    match (obj["apiVersion"].as_str(), obj["kind"].as_str()) {
        (Some("v1"), Some("Secret")) => format!("/api/v1/namespaces/{ns}/secrets"),
        (Some("oos.chatops.dev/v1alpha1"), Some("ChatConfiguration")) => {
            format!("/apis/oos.chatops.dev/v1alpha1/namespaces/{ns}/chatconfigurations")
        }
        other => panic!("corpus objects are Secrets and ChatConfigurations, not {other:?}"),
    }
}

fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn kube_message(e: kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// Submits `obj` into `ns` the way `mode` says; the apiserver's refusal message on failure.
async fn submit(h: &Harness, obj: &Value, mode: Mode) -> Result<(), String> {
    let mut obj = obj.clone();
    obj["metadata"]["namespace"] = json!(h.ns);
    let req = Request::new(collection_path(&h.ns, &obj));
    let mut http = match mode {
        Mode::Strict | Mode::Default => req
            .create(&PostParams::default(), serde_json::to_vec(&obj).unwrap())
            .unwrap(),
        Mode::ServerSide => req
            .patch(
                &name_of(&obj),
                &PatchParams::apply("corpus").force(),
                &Patch::Apply(&obj),
            )
            .unwrap(),
    };
    if mode == Mode::Strict {
        let uri = http.uri().to_string();
        let sep = if uri.contains('?') { '&' } else { '?' };
        *http.uri_mut() = format!("{uri}{sep}fieldValidation=Strict").parse().unwrap();
    }
    h.client
        .request_text(http)
        .await
        .map(drop)
        .map_err(kube_message)
}

async fn delete(h: &Harness, obj: &Value) {
    let req = Request::new(collection_path(&h.ns, obj))
        .delete(&name_of(obj), &DeleteParams::default())
        .unwrap();
    let _ = h.client.request_text(req).await;
}

/// What one case showed.
struct Outcome {
    summary: String,
}

type CaseResult = Result<Outcome, String>;

async fn run_case(case: &Case) -> CaseResult {
    let h = Harness::start(&format!("corpus-{}", case.name), Duration::from_secs(600)).await;
    let faults = case
        .file
        .faults
        .iter()
        .try_for_each(|rule| h.emulator.faults().add_rule(rule.clone()))
        .map_err(|e| format!("fault rule: {e}"));
    let result = match (faults, &case.file.expect) {
        (Err(e), _) => Err(e),
        (
            Ok(()),
            Expect {
                admission: Some(texts),
                ..
            },
        ) => admission_case(&h, case, texts).await,
        (
            Ok(()),
            Expect {
                condition: Some(cond),
                ..
            },
        ) => condition_case(&h, case, cond).await,
        _ => unreachable!("checked on load"),
    };
    let control = control_object(&h).await;
    h.assert_no_secret_leak().await;
    h.stop().await;
    let outcome = result?;
    control?;
    Ok(outcome)
}

async fn admission_case(h: &Harness, case: &Case, texts: &Texts) -> CaseResult {
    let (last, before) = case.objects.split_last().unwrap();
    for obj in before {
        submit(h, obj, Mode::ServerSide)
            .await
            .map_err(|e| format!("{} was refused: {e}", name_of(obj)))?;
    }
    let modes = case.file.expect.modes.clone().unwrap_or(ALL_MODES.to_vec());
    let mut first = String::new();
    for mode in modes {
        let want = match (mode, &case.file.expect.server_side) {
            (Mode::ServerSide, Some(t)) => t,
            _ => texts,
        };
        match submit(h, last, mode).await {
            Ok(()) => {
                delete(h, last).await;
                return Err(format!("accepted with {mode:?}"));
            }
            Err(message) => {
                let missing = want.missing_from(&message);
                if !missing.is_empty() {
                    return Err(format!(
                        "{mode:?}: the refusal does not say {missing:?}: {message}"
                    ));
                }
                if first.is_empty() {
                    first = message;
                }
            }
        }
    }
    if h.emulator.requests().iter().any(|r| r.action.is_some()) {
        return Err("a remote call was made".into());
    }
    Ok(Outcome {
        summary: format!("admission: {}", one_line(&first, 150)),
    })
}

/// Ready's `(status, reason, message)`, the kstatus pair and whether status describes the
/// current generation.
struct Seen {
    ready: (String, String, String),
    stalled: Option<String>,
    reconciling: Option<String>,
    current: bool,
    resource_version: Option<String>,
}

async fn seen(h: &Harness, name: &str) -> anyhow::Result<Seen> {
    let obj: ChatConfiguration = h.objects().get(name).await?;
    let st = obj.status.clone().unwrap_or_default();
    let cond = |t: &str| st.conditions.iter().find(|c| c.type_ == t);
    let ready = cond("Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .ok_or_else(|| anyhow::anyhow!("no Ready condition yet"))?;
    Ok(Seen {
        ready,
        stalled: cond("Stalled").map(|c| c.status.clone()),
        reconciling: cond("Reconciling").map(|c| c.status.clone()),
        current: st.observed_generation == obj.metadata.generation,
        resource_version: obj.metadata.resource_version.clone(),
    })
}

/// Warning events about `name`, each with how often it was published (an event series counts
/// its repetitions).
async fn warnings(h: &Harness, name: &str) -> Vec<(String, i32)> {
    let api: kube::Api<Event> = kube::Api::namespaced(h.client.clone(), &h.ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .map(|e| {
            let n = e.series.as_ref().map_or(1, |s| s.count);
            (e.reason.unwrap_or_default(), n)
        })
        .collect()
}

/// Remote writes since request-log position `mark`: `(refused, accepted)`.
fn writes_since(h: &Harness, mark: u64) -> (usize, usize) {
    let writes: Vec<_> = h
        .emulator
        .requests()
        .into_iter()
        .filter(|r| r.seq >= mark && r.action.as_deref().is_some_and(|a| WRITES.contains(&a)))
        .collect();
    let refused = writes.iter().filter(|r| r.status >= 400).count();
    (refused, writes.len() - refused)
}

fn next_seq(h: &Harness) -> u64 {
    h.emulator.requests().last().map_or(0, |r| r.seq + 1)
}

async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    wait_for(timeout, f)
        .await
        .map_err(|e| format!("{what}: {e:#}"))
}

async fn condition_case(h: &Harness, case: &Case, want: &ConditionExpect) -> CaseResult {
    for obj in &case.objects {
        submit(h, obj, Mode::ServerSide)
            .await
            .map_err(|e| format!("{} was refused at admission: {e}", name_of(obj)))?;
    }
    let target = match &want.object {
        Some(n) => n.clone(),
        None => {
            let ccs: Vec<String> = case
                .objects
                .iter()
                .filter(|o| is_chat_configuration(o))
                .map(name_of)
                .collect();
            assert_eq!(ccs.len(), 1, "{}: name expect.condition.object", case.name);
            ccs[0].clone()
        }
    };
    let mut mark = 0;
    if !case.file.steps.is_empty() {
        wait_until(CONDITION_TIMEOUT, "Ready before the steps", || async {
            let s = seen(h, &target).await?;
            anyhow::ensure!(s.ready.0 == "True", "Ready is {:?}", s.ready);
            Ok(())
        })
        .await?;
        mark = next_seq(h);
        for step in &case.file.steps {
            run_step(h, step).await?;
        }
    }

    let start = Instant::now();
    let s = wait_until(CONDITION_TIMEOUT, "the condition", || async {
        let s = seen(h, &target).await?;
        anyhow::ensure!(
            s.ready.0 == "False" && s.ready.1 == want.reason && s.current,
            "Ready is {:?} (current generation: {})",
            s.ready,
            s.current
        );
        Ok(s)
    })
    .await?;
    let took = start.elapsed();
    let (stalled, reconciling) = match want.kstatus {
        Kstatus::Stalled => ("True", "False"),
        Kstatus::Reconciling => ("False", "True"),
    };
    if s.stalled.as_deref() != Some(stalled) || s.reconciling.as_deref() != Some(reconciling) {
        return Err(format!(
            "{:?} expected, but Stalled={:?} Reconciling={:?}",
            want.kstatus, s.stalled, s.reconciling
        ));
    }
    let missing = want.message_contains.missing_from(&s.ready.2);
    if !missing.is_empty() {
        return Err(format!(
            "the message does not say {missing:?}: {}",
            s.ready.2
        ));
    }
    wait_until(Duration::from_secs(10), "a Warning event", || async {
        anyhow::ensure!(!warnings(h, &target).await.is_empty(), "none yet");
        Ok(())
    })
    .await?;

    // Nothing more happens: no second event, no status churn, no remote write.
    tokio::time::sleep(SETTLE).await;
    let events = warnings(h, &target).await;
    let published: i32 = events.iter().map(|(_, n)| n).sum();
    if published != 1 || events[0].0 != want.reason {
        return Err(format!(
            "expected exactly one Warning event {}, got {events:?}",
            want.reason
        ));
    }
    let later = seen(h, &target).await.map_err(|e| e.to_string())?;
    if later.ready != s.ready || later.resource_version != s.resource_version {
        return Err(format!(
            "status changed after the condition: {:?} -> {:?}",
            s.ready, later.ready
        ));
    }
    let (refused, accepted) = writes_since(h, mark);
    if accepted != 0 || refused != want.refused_writes {
        return Err(format!(
            "remote writes: {accepted} accepted, {refused} refused (expected 0 and {})",
            want.refused_writes
        ));
    }
    Ok(Outcome {
        summary: format!(
            "condition {} ({:?}) in {:.1}s: {}",
            want.reason,
            want.kstatus,
            took.as_secs_f64(),
            one_line(&s.ready.2, 150)
        ),
    })
}

async fn run_step(h: &Harness, step: &Step) -> Result<(), String> {
    match step {
        Step {
            delete_secret: Some(name),
            remove_key: None,
            apply: None,
        } => h
            .secrets()
            .delete(name, &DeleteParams::default())
            .await
            .map(drop)
            .map_err(kube_message),
        Step {
            delete_secret: None,
            remove_key: Some(RemoveKey { secret, key }),
            apply: None,
        } => {
            let patch = json!({"data": {key: null}});
            h.secrets()
                .patch(secret, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(drop)
                .map_err(kube_message)
        }
        Step {
            delete_secret: None,
            remove_key: None,
            apply: Some(obj),
        } => {
            let obj = expand(obj).map_err(|e| e.to_string())?;
            submit(h, &obj, Mode::ServerSide).await
        }
        _ => Err("a step is exactly one of deleteSecret, removeKey, apply".into()),
    }
}

/// A healthy object in the case's namespace becomes Ready: the controller survived the case.
async fn control_object(h: &Harness) -> Result<(), String> {
    h.emulator.faults().clear();
    h.put_secret("corpus-control", &[("clientSecret", CLIENT_SECRET_1)])
        .await;
    let obj = json!({
        "apiVersion": "oos.chatops.dev/v1alpha1", "kind": "ChatConfiguration",
        "metadata": {"name": "corpus-control"},
        "spec": {"type": "DingTalk", "ramRole": "OOSServiceRole",
                 "dingTalk": {"clientId": "ding-control",
                              "clientSecretRef": {"name": "corpus-control", "key": "clientSecret"}}}
    });
    submit(h, &obj, Mode::ServerSide).await?;
    wait_until(CONDITION_TIMEOUT, "the control object Ready", || async {
        let s = seen(h, "corpus-control").await?;
        anyhow::ensure!(s.ready.0 == "True", "Ready is {:?}", s.ready);
        Ok(())
    })
    .await
}

fn one_line(s: &str, max: usize) -> String {
    let s = s.replace('\n', " | ");
    if s.chars().count() <= max {
        s
    } else {
        s.chars().take(max).collect::<String>() + "…"
    }
}

/// README.md lists every case by name.
#[test]
fn readme_lists_every_case() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("## Bad-input corpus")
        .nth(1)
        .expect("README.md has a \"Bad-input corpus\" section");
    let section = section.split("\n## ").next().unwrap();
    let names: Vec<String> = load_cases().into_iter().map(|c| c.name).collect();
    for name in &names {
        assert!(
            section.contains(&format!("`{name}`")),
            "README.md's corpus section does not list `{name}`"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_corpus() {
    let cases = load_cases();
    assert!(
        cases.len() >= 30,
        "{} cases; the corpus has at least 30",
        cases.len()
    );
    // CORPUS_CASE=part-of-a-name runs the matching cases only (while writing one).
    let filter = std::env::var("CORPUS_CASE").ok();
    let selected: Vec<&Case> = cases
        .iter()
        .filter(|c| filter.as_deref().is_none_or(|f| c.name.contains(f)))
        .collect();
    let started = Instant::now();
    let results: BTreeMap<String, (CaseResult, Duration)> =
        futures::stream::iter(selected.iter().map(|case| async move {
            let t = Instant::now();
            let r = run_case(case).await;
            (case.name.clone(), (r, t.elapsed()))
        }))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut failures = Vec::new();
    for case in &selected {
        let (r, took) = &results[&case.name];
        match r {
            Ok(o) => eprintln!(
                "ok   {:<44} {:>5.1}s {}",
                case.name,
                took.as_secs_f64(),
                o.summary
            ),
            Err(e) => {
                eprintln!("FAIL {:<44} {:>5.1}s {e}", case.name, took.as_secs_f64());
                failures.push(format!("{} ({}): {e}", case.name, case.file.description));
            }
        }
    }
    eprintln!(
        "{} cases in {:.1}s ({} failed)",
        selected.len(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "corpus failures:\n{}",
        failures.join("\n")
    );
}
