//! Raw YAML types -> [`Model`]: calls each section's validator in dependency order (a route
//! refers to upstreams, providers, policies and the cache by name) and collects every problem.

use super::check::{Checker, Names, Problems};
use super::model::*;
use super::raw::*;
use std::path::Path;

/// Validates `raw`; on failure returns (key path, message) pairs.
pub(super) fn validate(raw: RawConfig, source: &Path, source_hash: u64) -> Result<Model, Problems> {
    let mut check = Checker::default();
    let RawConfig {
        server,
        listeners,
        admin,
        access_log,
        upstreams,
        auth,
        rate_limits,
        cache,
        routes,
        tracing,
    } = raw;
    let tracing = super::tracing::tracing_spec(&mut check, tracing);

    let any_route_caches = routes.iter().any(|r| r.cache.is_some());
    let cache = super::cache::cache_settings(&mut check, cache, any_route_caches);
    let server = super::server::server_settings(&mut check, server);
    let listeners = super::listeners::listener_specs(&mut check, listeners);
    let admin_address = super::server::admin_address(&mut check, admin, &listeners);
    let access_log = super::server::access_log_spec(&mut check, access_log);
    let upstreams: Vec<UpstreamSpec> = upstreams
        .into_iter()
        .map(|(name, upstream)| super::upstreams::upstream_spec(&mut check, &name, upstream))
        .collect();
    let auth = super::auth::auth_spec(&mut check, auth);
    let rate_limits = super::ratelimit::rate_limit_spec(&mut check, rate_limits);
    redis_users(&mut check, &rate_limits, cache.as_ref());
    let sections = super::routes::Sections {
        upstreams: Names::of(&upstreams, |u| u.name.as_str()),
        auth: &auth,
        rate_limits: &rate_limits,
        cache: cache.as_ref(),
        tracing: tracing.is_some(),
    };
    let routes = super::routes::route_specs(&mut check, routes, &sections);

    let problems = check.into_problems();
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Model {
        source: source.to_path_buf(),
        source_hash,
        server,
        listeners,
        admin_address,
        access_log,
        auth,
        rate_limits,
        cache,
        upstreams,
        routes,
        tracing,
    })
}

/// `rate_limits.redis` is there for the shared store or the purge channel, and the channel
/// needs it.
fn redis_users(check: &mut Checker, rate_limits: &RateLimitSpec, cache: Option<&CacheSettings>) {
    let channel = cache.is_some_and(|c| c.purge_channel.is_some());
    if channel && rate_limits.redis.is_none() && !check.is_invalid("rate_limits.redis") {
        check.fail(
            "cache.purge_channel",
            "needs `rate_limits.redis` (the Redis that carries purges to every instance)",
        );
    }
    if rate_limits.redis.is_some()
        && rate_limits.store == StoreSpec::Local
        && !channel
        && rate_limits.quotas.is_empty()
    {
        check.fail(
            "rate_limits.redis",
            "is used by `store: redis`, `rate_limits.quotas` and `cache.purge_channel`, and none is set",
        );
    }
}
