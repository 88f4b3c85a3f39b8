//! The operator's small HTTP endpoint (`/metrics`, `/healthz`, `/readyz`) on hyper, which kube
//! already brings in: no web framework in the operator binary.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tracing::{debug, info};

/// Answers one request: status, content type, body.
pub type Handler = Arc<dyn Fn(&str) -> Option<(StatusCode, &'static str, String)> + Send + Sync>;

/// Serves `handler` on `addr` until the task is dropped or aborted.
pub async fn serve(addr: SocketAddr, handler: Handler) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding --metrics-addr {addr}"))?;
    info!(addr = %listener.local_addr().unwrap_or(addr), "serving /metrics, /healthz and /readyz");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "accept failed");
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(respond(&handler, &req)) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(error = %e, "metrics connection ended with an error");
            }
        });
    }
}

fn respond(handler: &Handler, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) =
        if req.method() != Method::GET && req.method() != Method::HEAD {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "method not allowed\n".to_string(),
            )
        } else {
            handler(req.uri().path()).unwrap_or((
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found\n".to_string(),
            ))
        };
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static headers are valid")
}
