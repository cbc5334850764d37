//! Black-box tests: the real `edgegate` binary, real origin servers, ephemeral ports.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod admin;
mod auth;
mod balancing;
mod cache;
mod cache_hits;
mod cache_rfc;
mod client_h2;
mod config_cli;
mod connections;
mod cors;
mod cors_browser;
mod docs;
mod failures;
mod grpc;
mod headers;
mod health;
mod http2;
mod jwks;
mod jwt_strict;
mod lifecycle;
mod metrics;
mod ratelimit;
mod redis_store;
mod reload;
mod resilience;
mod robustness;
mod routing;
mod slow_clients;
mod strict_http;
mod support;
mod tls;
mod tls_listener;
mod websocket;
