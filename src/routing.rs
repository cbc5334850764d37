//! The compiled route table: host -> path (exact/prefix/regex) -> method/header predicates,
//! first match wins. Built once per configuration; matching allocates nothing.

use crate::config::{HostPattern, MatchSpec, PathMatch, RouteSpec};
use http::{HeaderMap, Method};

/// The parts of a request that routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// Host header (or URI authority), possibly with a port.
    pub host: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

/// Ordered route predicates; `find` returns the index of the first route that matches.
#[derive(Debug, Clone)]
pub struct Router {
    matchers: Vec<MatchSpec>,
}

impl Router {
    /// Compiles the matchers of `routes`, keeping their order.
    pub fn new(routes: &[RouteSpec]) -> Self {
        Router {
            matchers: routes.iter().map(|route| route.matcher.clone()).collect(),
        }
    }

    /// Index of the first matching route.
    pub fn find(&self, request: &RequestView<'_>) -> Option<usize> {
        let host = host_without_port(request.host);
        self.matchers.iter().position(|m| matches(m, host, request))
    }
}

fn matches(matcher: &MatchSpec, host: &str, request: &RequestView<'_>) -> bool {
    path_matches(&matcher.path, request.path)
        && (matcher.hosts.is_empty()
            || matcher
                .hosts
                .iter()
                .any(|pattern| host_matches(pattern, host)))
        && (matcher.methods.is_empty() || matcher.methods.contains(request.method))
        && matcher
            .headers
            .iter()
            .all(|(name, value)| request.headers.get_all(name).iter().any(|v| v == value))
}

fn path_matches(rule: &PathMatch, path: &str) -> bool {
    match rule {
        PathMatch::Any => true,
        PathMatch::Exact(exact) => path == exact,
        PathMatch::Prefix(prefix) => has_segment_prefix(path, prefix),
        PathMatch::Regex(regex) => regex.is_match(path),
    }
}

/// True when `path` is `prefix` or continues it with a `/` (so `/api/users` never matches `/api/usersX`).
pub fn has_segment_prefix(path: &str, prefix: &str) -> bool {
    path.starts_with(prefix) && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

fn host_matches(pattern: &HostPattern, host: &str) -> bool {
    match pattern {
        HostPattern::Exact(name) => host.eq_ignore_ascii_case(name),
        HostPattern::Suffix(suffix) => {
            host.len() > suffix.len()
                && host.is_char_boundary(host.len() - suffix.len())
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
    }
}

/// `example.com:8080` -> `example.com`, `[::1]:80` -> `[::1]`.
pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rfind(':') {
        Some(colon) if host[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..colon],
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use std::path::Path;

    fn router(routes_yaml: &str) -> Router {
        let text = format!(
            "listeners: [{{ name: http, address: 127.0.0.1:1 }}]\n\
             upstreams: {{ u: {{ targets: [{{ address: 127.0.0.1:2 }}] }} }}\n\
             routes:\n{routes_yaml}"
        );
        let model = config::from_str(&text, Path::new("test.yaml")).unwrap();
        Router::new(&model.routes)
    }

    fn find(
        router: &Router,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<usize> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        router.find(&RequestView {
            method: &method,
            host,
            path,
            headers: &map,
        })
    }

    #[test]
    fn prefixes_match_on_segment_boundaries_only() {
        let r = router("  - { name: users, match: { path_prefix: /api/users }, upstream: u }\n");
        assert_eq!(find(&r, "GET", "h", "/api/users", &[]), Some(0));
        assert_eq!(find(&r, "GET", "h", "/api/users/7", &[]), Some(0));
        assert_eq!(find(&r, "GET", "h", "/api/usersX", &[]), None);
        assert_eq!(find(&r, "GET", "h", "/api", &[]), None);
    }

    #[test]
    fn a_trailing_slash_in_the_prefix_is_the_same_prefix() {
        let r = router("  - { name: a, match: { path_prefix: /api/ }, upstream: u }\n");
        assert_eq!(find(&r, "GET", "h", "/api/x", &[]), Some(0));
        assert_eq!(find(&r, "GET", "h", "/apix", &[]), None);
    }

    #[test]
    fn first_match_wins_in_order() {
        let r = router(
            "  - { name: exact, match: { path_exact: /a/b }, upstream: u }\n  \
             - { name: prefix, match: { path_prefix: /a }, upstream: u }\n  \
             - { name: regex, match: { path_regex: '^/r/[0-9]+$' }, upstream: u }\n",
        );
        assert_eq!(find(&r, "GET", "h", "/a/b", &[]), Some(0));
        assert_eq!(find(&r, "GET", "h", "/a/b/c", &[]), Some(1));
        assert_eq!(find(&r, "GET", "h", "/r/12", &[]), Some(2));
        assert_eq!(find(&r, "GET", "h", "/r/x", &[]), None);
    }

    #[test]
    fn hosts_match_exactly_or_by_wildcard_suffix_ignoring_case_and_port() {
        let r = router(
            "  - { name: a, match: { hosts: [api.example.com, '*.example.org'] }, upstream: u }\n",
        );
        assert_eq!(find(&r, "GET", "API.example.com:8080", "/", &[]), Some(0));
        assert_eq!(find(&r, "GET", "x.example.org", "/", &[]), Some(0));
        assert_eq!(find(&r, "GET", "a.b.example.org", "/", &[]), Some(0));
        assert_eq!(find(&r, "GET", "example.org", "/", &[]), None);
        assert_eq!(find(&r, "GET", "evilexample.org", "/", &[]), None);
        assert_eq!(find(&r, "GET", "other.com", "/", &[]), None);
    }

    #[test]
    fn methods_and_headers_are_required_when_listed() {
        let r = router(
            "  - { name: a, match: { methods: [POST], headers: { x-flag: on } }, upstream: u }\n",
        );
        assert_eq!(find(&r, "POST", "h", "/", &[("x-flag", "on")]), Some(0));
        assert_eq!(find(&r, "GET", "h", "/", &[("x-flag", "on")]), None);
        assert_eq!(find(&r, "POST", "h", "/", &[("x-flag", "off")]), None);
        assert_eq!(find(&r, "POST", "h", "/", &[]), None);
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(host_without_port("a.com:80"), "a.com");
        assert_eq!(host_without_port("a.com"), "a.com");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }
}
