//! edgegate: an edge proxy and API gateway on Pingora.

pub mod admin;
pub mod aggregate;
pub mod auth;
pub mod cache;
pub mod compression;
pub mod config;
pub mod cors;
pub mod fastfmt;
pub mod fleet;
pub mod gateway;
pub mod hashing;
pub mod lifecycle;
pub mod listener;
pub mod observability;
pub mod ratelimit;
pub mod reload;
pub mod routing;
pub mod server;
pub mod snapshot;
pub mod templates;
pub mod tls;
pub mod upstream;
