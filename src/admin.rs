//! The operator listener: `/health`, `/ready`, `/status`, `/metrics`, `POST /cache/purge`,
//! `GET /ratelimit/quota`.

use crate::fleet::purge::{Pick, PurgeOrder};
use crate::gateway::respond::error_body;
use crate::observability::metrics;
use crate::snapshot::Snapshot;
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
    snapshot: Arc<ArcSwap<Snapshot>>,
    started: Instant,
}

impl AdminApp {
    /// An admin app reading `snapshot`.
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        AdminApp {
            snapshot,
            started: Instant::now(),
        }
    }

    fn status(&self, snapshot: &Snapshot) -> serde_json::Value {
        let upstreams: Vec<_> = snapshot
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
        let routes: Vec<_> = snapshot
            .routes
            .iter()
            .map(|r| r.spec.name.as_str())
            .collect();
        let cache = snapshot.cache.as_ref().map(|c| c.store().usage());
        let limiter = &snapshot.limiter;
        let policies: Vec<_> = limiter
            .policies
            .iter()
            .enumerate()
            .map(|(index, policy)| {
                json!({
                    "name": policy.name,
                    "shadow": policy.shadow,
                    "top_offenders": limiter.top_offenders(index, TOP_OFFENDERS),
                })
            })
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs(),
            "config": {
                "path": snapshot.model.source.display().to_string(),
                "hash": format!("{:016x}", snapshot.model.source_hash),
            },
            "routes": routes,
            "upstreams": upstreams,
            "cache": cache,
            "rate_limits": { "store": limiter.store_name(), "policies": policies },
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
        let query = request.uri.query().unwrap_or("").to_string();
        let snapshot = self.snapshot.load_full();
        match (method.as_str(), path.as_str()) {
            ("GET" | "HEAD", "/health") => {
                json_response(StatusCode::OK, &json!({ "status": "ok" }))
            }
            ("GET" | "HEAD", "/ready") => {
                let not_ready: Vec<&str> = snapshot
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
            ("GET" | "HEAD", "/status") => json_response(StatusCode::OK, &self.status(&snapshot)),
            ("POST", "/cache/purge") => match read_body(session).await {
                Ok(body) => purge(&snapshot, &body).await,
                Err(message) => error_response(StatusCode::BAD_REQUEST, &message),
            },
            (_, "/cache/purge") => {
                error_response(StatusCode::METHOD_NOT_ALLOWED, "use POST /cache/purge")
            }
            ("GET" | "HEAD", "/ratelimit/quota") => quota_usage(&snapshot, &query).await,
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
                    "unknown admin endpoint: try /health, /ready, /status, /metrics, /ratelimit/quota or POST /cache/purge",
                    "-",
                )
                .into_bytes(),
            ),
        }
    }
}

/// Offenders listed per policy on `/status`.
const TOP_OFFENDERS: usize = 10;

/// Largest purge request body read.
const MAX_PURGE_BODY: usize = 64 << 10;

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_PURGE_BODY {
                    return Err(format!("the body is larger than {MAX_PURGE_BODY} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) => return Err(format!("cannot read the body: {error}")),
        }
    }
}

fn error_response(status: StatusCode, message: &str) -> Response<Vec<u8>> {
    respond(
        status,
        "application/json",
        error_body(status.as_u16(), message, "-").into_bytes(),
    )
}

/// `{"url": "http://host/path?q"}` removes that URL's entries (every route and variant);
/// `{"prefix": "http://host/path/"}` every URL starting so; `{"tags": [...]}` every entry tagged
/// so. Here first, then (with `cache.purge_channel`) on every other instance.
async fn purge(snapshot: &Snapshot, body: &[u8]) -> Response<Vec<u8>> {
    let Some(cache) = snapshot.cache.as_ref() else {
        return error_response(
            StatusCode::NOT_FOUND,
            "no route caches responses, so there is nothing to purge",
        );
    };
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PurgeRequest {
        url: Option<String>,
        prefix: Option<String>,
        tags: Option<Vec<String>>,
        #[serde(default)]
        soft: bool,
    }
    let request: PurgeRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!(
                    "expected {{\"url\": \"http://host/path\"}}, {{\"prefix\": \"http://host/path/\"}} or {{\"tags\": [\"t1\", \"t2\"]}}, optionally with \"soft\": true: {error}"
                ),
            )
        }
    };
    let pick = match (request.url, request.prefix, request.tags) {
        (Some(url), None, None) => match purge_address(&url, true) {
            Some(url) => Pick::Url(url),
            None => return error_response(StatusCode::BAD_REQUEST, "`url` needs a host"),
        },
        (None, Some(prefix), None) => match purge_address(&prefix, false) {
            Some(prefix) => Pick::Prefix(prefix),
            None => return error_response(StatusCode::BAD_REQUEST, "`prefix` needs a host"),
        },
        (None, None, Some(tags)) if !tags.is_empty() => Pick::Tags(tags),
        _ => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "give exactly one of `url`, `prefix` and `tags` (a non-empty list)",
            )
        }
    };
    let order = PurgeOrder {
        pick,
        soft: request.soft,
    };
    let purged = order.apply(cache.store());
    let verb = if request.soft {
        "marked stale"
    } else {
        "removed"
    };
    log::info!("cache purge {verb} {purged} entries");
    let mut answer = json!({ "purged": purged });
    if let Some(bus) = snapshot.purge_bus.as_ref() {
        answer["fleet"] = json!(bus.send(order).await.label());
    }
    json_response(StatusCode::OK, &answer)
}

/// `GET /ratelimit/quota?name=monthly&key=alice`: where a quota stands for a key, without
/// counting (`key` once per key part, in order; none for `global`).
async fn quota_usage(snapshot: &Snapshot, query: &str) -> Response<Vec<u8>> {
    let Some(quotas) = snapshot.limiter.quotas.as_ref() else {
        return error_response(
            StatusCode::NOT_FOUND,
            "no quota is configured (rate_limits.quotas)",
        );
    };
    let mut name = None;
    let mut keys = Vec::new();
    for (field, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
        let value = percent_decode(value);
        match field {
            "name" => name = Some(value),
            "key" => keys.push(value),
            _ => {}
        }
    }
    let Some(name) = name else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "give the quota: ?name=NAME&key=VALUE",
        );
    };
    let Some(index) = quotas.position(&name) else {
        return error_response(StatusCode::NOT_FOUND, &format!("no quota named `{name}`"));
    };
    let (identity, headers, client_ip) = match quotas.lookup_input(index, &keys) {
        Ok(parts) => parts,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, &message),
    };
    let input = crate::ratelimit::KeyInput {
        route: 0,
        route_name: "",
        client_ip,
        identity: identity.as_ref(),
        headers: &headers,
    };
    match quotas.usage(index, &input).await {
        Ok(report) => json_response(
            StatusCode::OK,
            &json!({
                "name": name,
                "key": keys,
                "period": report.period,
                "limit": report.limit,
                "used": report.used,
                "remaining": report.remaining(),
                "resets_at": report.resets_at.to_string(),
                "reset_seconds": report.reset_secs,
            }),
        ),
        Err(_) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the quota store (Redis) is unreachable",
        ),
    }
}

/// A query value: `%XX` and `+` decoded.
fn percent_decode(text: &str) -> String {
    let mut out = Vec::with_capacity(text.len());
    crate::aggregate::template::percent_decode(text.as_bytes(), true, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `http://Host:8080/p?q` -> `host:8080/p?q`, the form entries are indexed by. A URL without a
/// path means `/`; a prefix is taken as written.
fn purge_address(text: &str, whole_url: bool) -> Option<String> {
    let text = text.trim();
    let rest = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
        .unwrap_or(text);
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if host.is_empty() {
        return None;
    }
    let path = if path.is_empty() && whole_url {
        "/"
    } else {
        path
    };
    Some(crate::cache::key::url(host, path))
}

#[cfg(test)]
mod tests {
    use super::purge_address;

    #[test]
    fn purge_addresses_match_the_index() {
        assert_eq!(
            purge_address("http://API.example:8080/v1/x?y=1", true).as_deref(),
            Some("api.example:8080/v1/x?y=1")
        );
        assert_eq!(purge_address("https://h", true).as_deref(), Some("h/"));
        assert_eq!(purge_address("h/a/", false).as_deref(), Some("h/a/"));
        assert_eq!(purge_address("http://h", false).as_deref(), Some("h"));
        assert_eq!(purge_address("http:///x", true), None);
    }
}
