//! Validation of `cache` and of route `cache`.

use super::check::Checker;
use super::model::*;
use super::raw::*;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// Validates the top-level `cache` section (`None` when absent and no route caches).
pub(super) fn cache_settings(
    check: &mut Checker,
    raw: Option<RawCache>,
    any_route_caches: bool,
) -> Option<CacheSettings> {
    if raw.is_none() && !any_route_caches {
        return None;
    }
    let RawCache {
        max_size,
        max_object_size,
        lock_timeout,
        default_ttl,
        stale_while_revalidate,
        stale_if_error,
        forward_cdn_cache_control,
        tag_header,
        forward_tag_header,
        purge_channel,
    } = raw.unwrap_or_default();
    if let Some(channel) = &purge_channel {
        if channel.is_empty()
            || channel.contains(['{', '}'])
            || channel.chars().any(char::is_whitespace)
        {
            check.fail(
                "cache.purge_channel",
                format!("`{channel}` must be a non-empty channel name without spaces or braces (it is used as a Redis hash tag)"),
            );
        }
    }
    let tag_header = check
        .header_name(
            "cache.tag_header".into(),
            tag_header.as_deref().unwrap_or("Cache-Tag"),
        )
        .unwrap_or(http::HeaderName::from_static("cache-tag"));
    let max_size = check.size("cache.max_size".into(), max_size.as_deref(), 256 * MIB);
    let raw_max_object_size_given = max_object_size.is_some();
    // The default never exceeds a small store's own size.
    let max_object_size = check.size(
        "cache.max_object_size".into(),
        max_object_size.as_deref(),
        (8 * MIB).min(max_size),
    );
    if max_size == 0 {
        check.fail("cache.max_size", "must be greater than zero");
    }
    // With no max_size its default is zero too: one mistake, one message.
    if max_object_size == 0 && (max_size > 0 || raw_max_object_size_given) {
        check.fail("cache.max_object_size", "must be greater than zero");
    } else if max_object_size > max_size {
        check.fail(
            "cache.max_object_size",
            format!("{max_object_size} bytes is larger than cache.max_size ({max_size} bytes)"),
        );
    }
    let lock_timeout = check.positive_duration(
        "cache.lock_timeout".into(),
        lock_timeout.as_deref(),
        secs(3),
    );
    let default_ttl = check.duration("cache.default_ttl".into(), default_ttl.as_deref(), secs(0));
    let stale_while_revalidate = check.duration(
        "cache.stale_while_revalidate".into(),
        stale_while_revalidate.as_deref(),
        secs(0),
    );
    let stale_if_error = check.duration(
        "cache.stale_if_error".into(),
        stale_if_error.as_deref(),
        secs(0),
    );
    Some(CacheSettings {
        max_size: usize::try_from(max_size).unwrap_or(usize::MAX),
        max_object_size: usize::try_from(max_object_size).unwrap_or(usize::MAX),
        lock_timeout,
        default_ttl,
        stale_while_revalidate,
        stale_if_error,
        forward_cdn_cache_control: forward_cdn_cache_control.unwrap_or(false),
        tag_header,
        forward_tag_header: forward_tag_header.unwrap_or(false),
        purge_channel,
    })
}

/// Validates a route's `cache` (`settings` is the validated top-level section).
pub(super) fn route_cache(
    check: &mut Checker,
    key: &str,
    raw: Option<RawRouteCache>,
    settings: Option<&CacheSettings>,
) -> Option<RouteCacheSpec> {
    let RawRouteCache {
        ttl,
        vary,
        methods,
        stale_while_revalidate,
        stale_if_error,
    } = raw?;
    let ttl = check.duration(
        format!("{key}.ttl"),
        ttl.as_deref(),
        settings.map_or(Duration::ZERO, |s| s.default_ttl),
    );
    let stale_while_revalidate = check.duration(
        format!("{key}.stale_while_revalidate"),
        stale_while_revalidate.as_deref(),
        settings.map_or(Duration::ZERO, |s| s.stale_while_revalidate),
    );
    let stale_if_error = check.duration(
        format!("{key}.stale_if_error"),
        stale_if_error.as_deref(),
        settings.map_or(Duration::ZERO, |s| s.stale_if_error),
    );
    let mut names = Vec::new();
    for (index, name) in vary.unwrap_or_default().iter().enumerate() {
        if let Some(name) = check.header_name(format!("{key}.vary[{index}]"), name) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let methods = methods.unwrap_or_else(|| vec!["GET".into(), "HEAD".into()]);
    let (mut get, mut head) = (false, false);
    for (index, method) in methods.iter().enumerate() {
        match method.to_ascii_uppercase().as_str() {
            "GET" => get = true,
            "HEAD" => head = true,
            other => check.fail(
                format!("{key}.methods[{index}]"),
                format!("`{other}` responses cannot be cached: use GET and/or HEAD"),
            ),
        }
    }
    if methods.is_empty() {
        check.fail(
            format!("{key}.methods"),
            "needs at least one of GET, HEAD (or omit it)",
        );
    }
    Some(RouteCacheSpec {
        ttl,
        vary: names,
        get,
        head,
        stale_while_revalidate,
        stale_if_error,
        forward_cdn_cache_control: settings.is_some_and(|s| s.forward_cdn_cache_control),
        tag_header: settings
            .filter(|s| !s.forward_tag_header)
            .map(|s| s.tag_header.clone()),
    })
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}
