//! Admin API on its own listener: counters, request log, stored state, reset and fault settings.

use super::Shared;
use super::assumptions as a;
use super::faults::FaultConfig;
use super::redact::mask_sensitive;
use super::store::Record;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub(crate) fn spawn(listener: TcpListener, shared: Arc<Shared>) -> JoinHandle<()> {
    let mut rx = shared.shutdown.clone();
    let app = Router::new()
        .route("/calls", get(calls))
        .route("/requests", get(requests))
        .route("/state", get(state))
        .route("/reset", post(reset))
        .route(
            "/faults",
            get(get_faults).post(set_faults).delete(clear_faults),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await;
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallsQuery {
    by: Option<String>,
}

/// `GET /calls`: requests per action (A19). `?by=code`: per action, per answer.
async fn calls(State(sh): State<Arc<Shared>>, Query(q): Query<CallsQuery>) -> Response {
    match q.by.as_deref() {
        None | Some("action") => Json(sh.calls.lock().expect("calls lock").clone()).into_response(),
        Some("code") => Json(sh.answers.lock().expect("answers lock").clone()).into_response(),
        Some(_) => bad_request("by must be action or code"),
    }
}

fn bad_request(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}

/// One stored chat configuration as `GET /state` shows it: secrets masked by A22.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredConfiguration {
    /// Account id (A17).
    pub owner: String,
    pub region: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub ram_role: Option<String>,
    pub resource_group_id: Option<String>,
    /// As Get shows it (A13): `YYYY-MM-DDTHH:MM:SS+00:00`.
    pub created_date: String,
    pub updated_date: String,
    /// The stored `Configuration` object, sensitive values `******` (A22).
    pub configuration: Value,
    /// `{"URL": …}` plus, for WeChat, `"AesKey": "******"` (A22).
    pub outputs: Value,
}

impl StoredConfiguration {
    pub(crate) fn new(owner: String, region: String, r: Record) -> Self {
        let mut configuration = Value::Object(r.configuration);
        mask_sensitive(&mut configuration);
        let mut outputs = Map::new();
        outputs.insert("URL".into(), r.url.into());
        if let Some(k) = r.aes_key {
            outputs.insert("AesKey".into(), k.into());
        }
        let mut outputs = Value::Object(outputs);
        mask_sensitive(&mut outputs);
        Self {
            owner,
            region,
            name: r.name,
            kind: r.kind,
            ram_role: r.ram_role,
            resource_group_id: r.resource_group_id,
            created_date: r.created.format(a::DATE_FORMAT).to_string(),
            updated_date: r.updated.format(a::DATE_FORMAT).to_string(),
            configuration,
            outputs,
        }
    }
}

/// Every stored configuration, optionally of one owner and/or region.
pub(crate) fn state_view(
    sh: &Shared,
    owner: Option<&str>,
    region: Option<&str>,
) -> Vec<StoredConfiguration> {
    sh.store
        .snapshot()
        .into_iter()
        .filter(|(o, r, _)| owner.is_none_or(|w| w == o) && region.is_none_or(|w| w == r))
        .map(|(o, r, rec)| StoredConfiguration::new(o, r, rec))
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateQuery {
    owner: Option<String>,
    region: Option<String>,
}

/// `GET /state[?owner=…][&region=…]`: `{"configurations": […]}` in (owner, region, name) order.
async fn state(State(sh): State<Arc<Shared>>, Query(q): Query<StateQuery>) -> Response {
    let view = state_view(&sh, q.owner.as_deref(), q.region.as_deref());
    Json(json!({"configurations": view})).into_response()
}

async fn requests(State(sh): State<Arc<Shared>>) -> Response {
    Json(sh.log.lock().expect("log lock").entries()).into_response()
}

#[derive(Deserialize)]
struct ResetQuery {
    #[serde(default)]
    state: bool,
}

async fn reset(State(sh): State<Arc<Shared>>, Query(q): Query<ResetQuery>) -> Response {
    sh.reset_counters();
    if q.state
        && let Err(e) = sh.store.clear()
    {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response();
    }
    Json(json!({"reset": true, "state": q.state})).into_response()
}

async fn get_faults(State(sh): State<Arc<Shared>>) -> Response {
    Json(sh.faults.get()).into_response()
}

async fn set_faults(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let parsed: FaultConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": e.to_string()})),
            )
                .into_response();
        }
    };
    match sh.faults.set(parsed) {
        Ok(()) => Json(sh.faults.get()).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": e}))).into_response(),
    }
}

async fn clear_faults(State(sh): State<Arc<Shared>>) -> Response {
    sh.faults.clear();
    Json(sh.faults.get()).into_response()
}
