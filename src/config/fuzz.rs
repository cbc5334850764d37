//! Property-based fuzzing of the configuration loader: whatever the text, `from_str` returns
//! (never panics), and every error names a position and, for validation errors, a key.
//! `PROPTEST_CASES=100000 cargo test --lib fuzz_` runs these (and the other `fuzz_` tests) longer.

use super::{from_str, ConfigError};
use proptest::prelude::*;
use serde_yaml::{Mapping, Value};
use std::path::Path;

const SHIPPED: [&str; 2] = [
    include_str!("../../conf/edgegate.yaml"),
    include_str!("../../conf/edgegate-tls.yaml"),
];

/// Key names the loader knows (and some it does not), so random documents reach deep validation.
const KEYS: &[&str] = &[
    "server",
    "threads",
    "listeners",
    "name",
    "address",
    "tls",
    "certificates",
    "cert",
    "key",
    "server_names",
    "http2",
    "h2c",
    "client_ca",
    "client_auth",
    "admin",
    "access_log",
    "format",
    "path",
    "upstreams",
    "targets",
    "weight",
    "selection",
    "hash_key",
    "health_check",
    "type",
    "interval",
    "timeout",
    "outlier_detection",
    "routes",
    "match",
    "path_prefix",
    "path_regex",
    "hosts",
    "methods",
    "headers",
    "upstream",
    "split",
    "strip_prefix",
    "retries",
    "attempts",
    "on",
    "backoff",
    "auth",
    "jwt",
    "api_key",
    "providers",
    "keys",
    "rate_limits",
    "policies",
    "algorithm",
    "limit",
    "window",
    "burst",
    "tiers",
    "store",
    "max_keys",
    "cache",
    "ttl",
    "vary",
    "max_size",
    "max_object_size",
    "websocket",
    "grpc",
    "max_body_size",
    "request_headers",
    "set",
    "remove",
    "http2",
    "read_timeout",
    "connect_timeout",
    "bogus",
    "",
];

/// Scalar values that look like what keys expect, plus noise.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "10s",
            "0s",
            "1ms",
            "5m",
            "1MiB",
            "0",
            "-1",
            "127.0.0.1:8080",
            "[::1]:0",
            "/api",
            "/",
            "GET",
            "round_robin",
            "consistent_hash",
            "header:X-Key",
            "claim:sub",
            "client_ip",
            "sliding_window",
            "token_bucket",
            "json",
            "off",
            "stdout",
            "required",
            "1.2",
            "http",
            "tcp",
            "grpc",
            "*",
            "~",
            "%2F",
            "\u{0}",
            "é",
            "99999999999999999999",
        ])
        .prop_map(|s| Value::String(s.to_string())),
        any::<String>().prop_map(Value::String),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        any::<f64>().prop_map(|f| Value::Number(f.into())),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Sequence),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|pairs| {
                let mut map = Mapping::new();
                for (key, value) in pairs {
                    map.insert(Value::String(key.to_string()), value);
                }
                Value::Mapping(map)
            }),
        ]
    })
}

/// Loads `text`; panics (failing the property) only on a positionless or keyless error.
fn load_and_check(text: &str) {
    let path = Path::new("fuzz.yaml");
    match from_str(text, path) {
        Ok(_) | Err(ConfigError::Read { .. } | ConfigError::TooLarge { .. }) => {}
        Err(ConfigError::Syntax { line, column, .. }) => {
            assert!(line >= 1 && column >= 1, "syntax error without a position");
        }
        Err(ConfigError::Invalid(problems)) => {
            assert!(!problems.is_empty(), "invalid without a problem");
            for problem in problems {
                assert!(problem.line >= 1 && problem.column >= 1, "{problem}");
                assert!(
                    !problem.key.is_empty(),
                    "a problem without a key: {problem}"
                );
                assert!(!problem.message.is_empty(), "{problem}");
                assert!(problem.to_string().starts_with("fuzz.yaml:"), "{problem}");
            }
        }
    }
}

/// One edit of a shipped config.
#[derive(Debug, Clone)]
enum Mutation {
    Delete {
        at: usize,
        len: usize,
    },
    Insert {
        at: usize,
        text: String,
    },
    Replace {
        at: usize,
        len: usize,
        with: &'static str,
    },
    DuplicateLine {
        line: usize,
    },
    SwapLines {
        a: usize,
        b: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let replacement = prop::sample::select(vec![
        "", " ", ":", "-", "{", "}", "[", "]", "'", "\"", "\n", "\t", "#", "&a", "*a", "!!binary",
        "0", "-5", "1e309", "null", "true", "10x", "1KiB", "::", "%", "\\", "é", "\u{feff}",
    ]);
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), ".{0,12}").prop_map(|(at, text)| Mutation::Insert { at, text }),
        (any::<usize>(), 0usize..12, replacement).prop_map(|(at, len, with)| Mutation::Replace {
            at,
            len,
            with
        }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
    ]
}

/// The nearest char boundary at or before `at % (len + 1)`.
fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let mut text = text.to_string();
    match mutation {
        Mutation::Delete { at, len } => {
            let start = boundary(&text, *at);
            let end = boundary(&text, start + len).max(start);
            text.replace_range(start..end, "");
        }
        Mutation::Insert { at, text: insert } => {
            let at = boundary(&text, *at);
            text.insert_str(at, insert);
        }
        Mutation::Replace { at, len, with } => {
            let start = boundary(&text, *at);
            let end = boundary(&text, start + len).max(start);
            text.replace_range(start..end, with);
        }
        Mutation::DuplicateLine { line } => {
            let mut lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                let index = line % lines.len();
                lines.insert(index, lines[index]);
            }
            text = lines.join("\n");
        }
        Mutation::SwapLines { a, b } => {
            let mut lines: Vec<&str> = text.lines().collect();
            if !lines.is_empty() {
                let len = lines.len();
                lines.swap(a % len, b % len);
            }
            text = lines.join("\n");
        }
    }
    text
}

proptest! {
    #[test]
    fn fuzz_config_random_text_never_panics(text in ".{0,400}") {
        load_and_check(&text);
    }

    #[test]
    fn fuzz_config_random_documents_never_panic(document in document()) {
        if let Ok(text) = serde_yaml::to_string(&document) {
            load_and_check(&text);
        }
    }

    #[test]
    fn fuzz_config_mutated_shipped_configs_never_panic(
        which in 0usize..SHIPPED.len(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut text = SHIPPED[which].to_string();
        for mutation in &mutations {
            text = apply(&text, mutation);
        }
        load_and_check(&text);
    }
}
