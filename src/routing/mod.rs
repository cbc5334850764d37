//! The compiled route table: host -> path (exact/prefix/regex/template) -> method/header predicates,
//! first match wins. Built once per configuration; matching allocates nothing. Paths are
//! normalized first (`normalize`), so the path matched is the path forwarded.

pub mod normalize;
pub mod split;
pub mod template;

use crate::config::{HostPattern, MatchSpec, PathMatch, RouteSpec};
use http::{HeaderMap, Method};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

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
///
/// Routes are filed in a trie under the literal path segments every request they match must
/// start with (`/api/v1` under `api` -> `v1`; a regex under its literal prefix; no path at the
/// root). A lookup walks the request's segments, so only routes on that walk are evaluated, and
/// merges their (sorted) index lists so the first route in configuration order still wins.
#[derive(Debug, Clone)]
pub struct Router {
    matchers: Vec<MatchSpec>,
    root: Node,
}

/// Trie depth limit: deeper literal segments still match, they are just not indexed.
const MAX_DEPTH: usize = 8;

#[derive(Debug, Clone, Default)]
struct Node {
    /// Routes whose literal segments end here, ascending.
    routes: Vec<u32>,
    children: HashMap<Box<str>, Node, BuildHasherDefault<Fnv>>,
}

impl Node {
    fn child(&self, segment: &str) -> Option<&Node> {
        if self.children.is_empty() {
            return None;
        }
        self.children.get(segment)
    }

    fn child_mut(&mut self, segment: &str) -> &mut Node {
        self.children.entry(segment.into()).or_default()
    }
}

/// FNV-1a: path segments are short, where SipHash's setup dominates. Keys come from the
/// operator's configuration, so hash flooding by clients is not a concern (lookups only probe).
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = hash;
    }
}

impl Router {
    /// Compiles the matchers of `routes`, keeping their order.
    pub fn new(routes: &[RouteSpec]) -> Self {
        let mut root = Node::default();
        for (index, route) in routes.iter().enumerate() {
            let mut node = &mut root;
            for segment in literal_segments(&route.matcher.path).iter().take(MAX_DEPTH) {
                node = node.child_mut(segment);
            }
            node.routes.push(index as u32);
        }
        Router {
            matchers: routes.iter().map(|route| route.matcher.clone()).collect(),
            root,
        }
    }

    /// Index of the first matching route.
    pub fn find(&self, request: &RequestView<'_>) -> Option<usize> {
        let host = host_without_port(request.host);
        let mut lists: [&[u32]; MAX_DEPTH + 1] = [&[]; MAX_DEPTH + 1];
        let mut depth = 0;
        lists[0] = &self.root.routes;
        let mut node = &self.root;
        let path = request.path.as_bytes();
        // A byte loop: request segments are short, so memchr's setup would cost more than it saves.
        let mut start = 1;
        while path.first() == Some(&b'/') && start <= path.len() && depth < MAX_DEPTH {
            let end = path[start..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(path.len(), |p| start + p);
            match node.child(&request.path[start..end]) {
                Some(child) => {
                    node = child;
                    depth += 1;
                    lists[depth] = &child.routes;
                }
                None => break,
            }
            start = end + 1;
        }
        // Merge the sorted lists in ascending route order; the first full match wins.
        let lists = &mut lists[..=depth];
        loop {
            let mut best: Option<(usize, u32)> = None;
            for (slot, list) in lists.iter().enumerate() {
                if let Some(&first) = list.first() {
                    if best.is_none_or(|(_, index)| first < index) {
                        best = Some((slot, first));
                    }
                }
            }
            let (slot, index) = best?;
            lists[slot] = &lists[slot][1..];
            if matches(&self.matchers[index as usize], host, request) {
                return Some(index as usize);
            }
        }
    }
}

/// The complete path segments every path matched by `rule` begins with.
fn literal_segments(rule: &PathMatch) -> Vec<String> {
    let literal: &str = match rule {
        PathMatch::Any => return Vec::new(),
        // The last segment of an exact path is complete; so is a segment-bounded prefix.
        PathMatch::Exact(path) | PathMatch::Prefix(path) => return split_segments(path),
        PathMatch::Regex(regex) => &regex_literal_prefix(regex.as_str()),
        PathMatch::Template(template) => {
            return template.literal_prefix().map(str::to_string).collect()
        }
    };
    // Only segments followed by `/` inside the literal are complete.
    match literal.rfind('/') {
        Some(end) if end > 0 => split_segments(&literal[..end]),
        _ => Vec::new(),
    }
}

fn split_segments(path: &str) -> Vec<String> {
    match path.strip_prefix('/') {
        Some("") | None => Vec::new(),
        Some(rest) => rest.split('/').map(str::to_string).collect(),
    }
}

/// The literal text an anchored regex must start with (`^/users/[0-9]+` -> `/users/`), or "".
fn regex_literal_prefix(pattern: &str) -> String {
    let Some(body) = pattern.strip_prefix('^') else {
        return String::new();
    };
    if pattern.contains('|') {
        return String::new();
    }
    let mut literal: String = body
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'))
        .collect();
    // A quantifier after the literal makes its last character optional or repeated.
    if matches!(
        body[literal.len()..].chars().next(),
        Some('?' | '*' | '+' | '{')
    ) {
        literal.pop();
    }
    literal
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
        PathMatch::Template(template) => template.matches(path),
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
    let digits = host.bytes().rev().take_while(u8::is_ascii_digit).count();
    match host.len().checked_sub(digits + 1) {
        Some(colon) if digits > 0 && host.as_bytes()[colon] == b':' => &host[..colon],
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
    fn path_templates_match_their_shape_in_route_order() {
        let r = router(
            "  - { name: me, match: { path_exact: /users/me/dashboard }, upstream: u }\n  \
             - { name: dash, match: { path_template: \"/users/{id}/dashboard\" }, upstream: u }\n  \
             - { name: any, match: { path_template: \"/{section}/{id}\" }, upstream: u }\n",
        );
        assert_eq!(find(&r, "GET", "h", "/users/me/dashboard", &[]), Some(0));
        assert_eq!(find(&r, "GET", "h", "/users/7/dashboard", &[]), Some(1));
        assert_eq!(find(&r, "GET", "h", "/users/7/settings", &[]), None);
        assert_eq!(find(&r, "GET", "h", "/users/7", &[]), Some(2));
        assert_eq!(find(&r, "GET", "h", "/users//dashboard", &[]), None);
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
    fn the_index_keeps_first_match_order_across_depths() {
        let r = router(
            "  - { name: deep, match: { path_prefix: /a/b/c }, upstream: u }\n  \
             - { name: any, match: { hosts: [only.example] }, upstream: u }\n  \
             - { name: shallow, match: { path_prefix: /a }, upstream: u }\n  \
             - { name: regex, match: { path_regex: '^/a/b/[0-9]+$' }, upstream: u }\n  \
             - { name: unanchored, match: { path_regex: 'z$' }, upstream: u }\n  \
             - { name: partial, match: { path_regex: '^/a/bc?' }, upstream: u }\n",
        );
        assert_eq!(find(&r, "GET", "h", "/a/b/c/d", &[]), Some(0));
        assert_eq!(find(&r, "GET", "only.example", "/a/b/c", &[]), Some(0));
        assert_eq!(find(&r, "GET", "only.example", "/a/x", &[]), Some(1));
        assert_eq!(find(&r, "GET", "h", "/a/b/7", &[]), Some(2));
        assert_eq!(find(&r, "GET", "h", "/q/z", &[]), Some(4));
        assert_eq!(find(&r, "GET", "h", "/b", &[]), None);
    }

    #[test]
    fn regex_literal_prefixes_are_conservative() {
        assert_eq!(regex_literal_prefix("^/users/[0-9]+$"), "/users/");
        assert_eq!(regex_literal_prefix("^/users?/x"), "/user");
        assert_eq!(regex_literal_prefix("/users/"), "");
        assert_eq!(regex_literal_prefix("^/a/|^/b/"), "");
        assert_eq!(regex_literal_prefix("^(?i)/A/"), "");
        assert_eq!(
            literal_segments(&PathMatch::Regex(regex::Regex::new("^/a/bc?").unwrap())),
            vec!["a"]
        );
        assert_eq!(
            literal_segments(&PathMatch::Exact("/".into())),
            Vec::<String>::new()
        );
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(host_without_port("a.com:80"), "a.com");
        assert_eq!(host_without_port("a.com"), "a.com");
        assert_eq!(host_without_port("[::1]:80"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        const SEGMENTS: &[&str] = &["api", "v1", "v2", "users", "a", "b", "", "x.y", "%41"];

        fn path() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(SEGMENTS), 0..6)
                .prop_map(|segments| format!("/{}", segments.join("/")))
        }

        /// One route's YAML: a path prefix, maybe a regex, hosts and methods.
        fn route() -> impl Strategy<Value = String> {
            (
                prop::option::of(path()),
                prop::option::of(prop::sample::select(vec![
                    "^/api/v[0-9]+/",
                    "/users$",
                    "^/a",
                ])),
                prop::option::of(prop::sample::select(vec![
                    "a.example",
                    "*.example",
                    "b.example",
                ])),
                prop::option::of(prop::sample::select(vec!["GET", "POST"])),
            )
                .prop_map(|(prefix, regex, host, method)| {
                    let mut predicates = Vec::new();
                    match (prefix, regex) {
                        (_, Some(regex)) => predicates.push(format!("path_regex: '{regex}'")),
                        (Some(prefix), None) => predicates.push(format!("path_prefix: '{prefix}'")),
                        (None, None) => {}
                    }
                    if let Some(host) = host {
                        predicates.push(format!("hosts: ['{host}']"));
                    }
                    if let Some(method) = method {
                        predicates.push(format!("methods: [{method}]"));
                    }
                    predicates.join(", ")
                })
        }

        proptest! {
            #[test]
            fn fuzz_the_router_finds_what_a_linear_scan_finds(
                routes in prop::collection::vec(route(), 1..8),
                requests in prop::collection::vec(
                    (path(), prop::sample::select(vec!["a.example", "b.example:8080", "c.example", ""]),
                     prop::sample::select(vec!["GET", "POST", "DELETE"])),
                    1..16,
                ),
            ) {
                let yaml: String = routes
                    .iter()
                    .enumerate()
                    .map(|(i, predicates)| format!("  - {{ name: r{i}, match: {{ {predicates} }}, upstream: u }}\n"))
                    .collect();
                let router = router(&yaml);
                for (path, host, method) in &requests {
                    let method = Method::from_bytes(method.as_bytes()).unwrap();
                    let headers = HeaderMap::new();
                    let request = RequestView { method: &method, host, path, headers: &headers };
                    let expected = router
                        .matchers
                        .iter()
                        .position(|m| matches(m, host_without_port(host), &request));
                    prop_assert_eq!(router.find(&request), expected, "{} {}{} in\n{}", method, host, path, yaml);
                }
            }
        }
    }
}
