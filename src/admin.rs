//! The operator listener: `/health`, `/ready`, `/status`, `/metrics`.

use crate::gateway::respond::error_body;
use crate::gateway::runtime::Runtime;
use crate::observability::metrics;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// Serves the admin endpoints from the current snapshot.
pub struct AdminApp {
    runtime: Arc<ArcSwap<Runtime>>,
    started: Instant,
}

impl AdminApp {
    /// An admin app reading `runtime`.
    pub fn new(runtime: Arc<ArcSwap<Runtime>>) -> Self {
        AdminApp {
            runtime,
            started: Instant::now(),
        }
    }

    fn status(&self, runtime: &Runtime) -> serde_json::Value {
        let upstreams: Vec<_> = runtime
            .pools
            .iter()
            .map(|pool| {
                let now = pool.now_ms();
                let backends: Vec<_> = pool
                    .backends
                    .iter()
                    .map(|b| {
                        let mut backend = json!({
                            "address": b.label,
                            "weight": b.weight,
                            "healthy": b.healthy.load(Relaxed),
                            "in_flight": b.in_flight.load(Relaxed),
                        });
                        if pool.outlier_detection.is_some() {
                            let o = b.outlier.snapshot(now);
                            backend["outlier"] = json!({
                                "ejected": o.ejected_for_ms.is_some(),
                                "ejected_for_ms": o.ejected_for_ms,
                                "times_ejected": o.times_ejected,
                                "probation": o.probation,
                                "consecutive_5xx": o.consecutive_5xx,
                                "consecutive_gateway_failures": o.consecutive_gateway_failures,
                            });
                        }
                        backend
                    })
                    .collect();
                json!({
                    "name": pool.name,
                    "ready": pool.is_ready(),
                    "in_flight": pool.in_flight.load(Relaxed),
                    "max_concurrent_requests": pool.max_concurrent_requests,
                    "health_check": pool.health_check.is_some(),
                    "outlier_detection": pool.outlier_detection.is_some(),
                    "panic": pool.in_panic(),
                    "backends": backends,
                })
            })
            .collect();
        let routes: Vec<_> = runtime
            .routes
            .iter()
            .map(|r| r.spec.name.as_str())
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "config": {
                "path": runtime.model.source.display().to_string(),
                "hash": format!("{:016x}", runtime.model.source_hash),
            },
            "routes": routes,
            "upstreams": upstreams,
        })
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let request = session.req_header();
        let (method, path) = (request.method.clone(), request.uri.path().to_string());
        let runtime = self.runtime.load_full();
        match (method.as_str(), path.as_str()) {
            ("GET" | "HEAD", "/health") => {
                json_response(StatusCode::OK, &json!({ "status": "ok" }))
            }
            ("GET" | "HEAD", "/ready") => {
                let not_ready: Vec<&str> = runtime
                    .pools
                    .iter()
                    .filter(|p| !p.is_ready())
                    .map(|p| p.name.as_str())
                    .collect();
                if not_ready.is_empty() {
                    json_response(StatusCode::OK, &json!({ "status": "ready" }))
                } else {
                    json_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({ "status": "not_ready", "upstreams_without_healthy_backend": not_ready }),
                    )
                }
            }
            ("GET" | "HEAD", "/status") => json_response(StatusCode::OK, &self.status(&runtime)),
            ("GET" | "HEAD", "/metrics") => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                metrics::render(),
            ),
            _ => respond(
                StatusCode::NOT_FOUND,
                "application/json",
                error_body(
                    404,
                    "unknown admin endpoint: try /health, /ready, /status or /metrics",
                    "-",
                )
                .into_bytes(),
            ),
        }
    }
}
