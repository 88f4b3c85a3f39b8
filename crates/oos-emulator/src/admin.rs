//! Admin API on its own listener: counters, request log, reset and fault settings.

use super::Shared;
use super::faults::FaultConfig;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub(crate) fn spawn(listener: TcpListener, shared: Arc<Shared>) -> JoinHandle<()> {
    let mut rx = shared.shutdown.clone();
    let app = Router::new()
        .route("/calls", get(calls))
        .route("/requests", get(requests))
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

async fn calls(State(sh): State<Arc<Shared>>) -> Response {
    Json(sh.calls.lock().expect("calls lock").clone()).into_response()
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
