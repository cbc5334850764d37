//! [`Checker`]: collects every validation problem (key path, message) instead of stopping at the
//! first, and parses the value kinds every section shares (durations, sizes, addresses, CIDRs,
//! header names and values, choices from a list, references by name).

use super::units::{parse_duration, parse_size};
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// (key path, message) pairs, in the order they were found.
pub(super) type Problems = Vec<(String, String)>;

/// Collects validation problems; every section's validator writes into one.
#[derive(Default)]
pub(super) struct Checker {
    problems: Problems,
    /// Items that failed validation (`auth.jwt.providers.p`): a reference to one is not a
    /// second problem.
    invalid: HashSet<String>,
}

impl Checker {
    pub(super) fn into_problems(self) -> Problems {
        self.problems
    }

    /// How many problems so far: a section compares it before and after to know if it is valid.
    pub(super) fn problem_count(&self) -> usize {
        self.problems.len()
    }

    pub(super) fn fail(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push((key.into(), message.into()));
    }

    /// The item at `key` was refused (its problems are reported where they are).
    pub(super) fn mark_invalid(&mut self, key: String) {
        self.invalid.insert(key);
    }

    /// Whether problems were found since `before` (a `problem_count`); the item at `key` is then
    /// marked invalid, so that what refers to it is not reported again.
    pub(super) fn refused_since(&mut self, before: usize, key: &str) -> bool {
        let refused = self.problem_count() != before;
        if refused {
            self.mark_invalid(key.to_string());
        }
        refused
    }

    /// Whether the item at `key` was refused.
    pub(super) fn is_invalid(&self, key: &str) -> bool {
        self.invalid.contains(key)
    }

    /// A duration, `default` when absent.
    pub(super) fn duration(
        &mut self,
        key: String,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        self.duration_at_least(key, value, default, Duration::ZERO)
    }

    /// A duration that must not be zero, `default` when absent.
    pub(super) fn positive_duration(
        &mut self,
        key: String,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        self.duration_at_least(key, value, default, Duration::from_millis(1))
    }

    /// A duration of at least `minimum`, `default` when absent.
    pub(super) fn duration_at_least(
        &mut self,
        key: String,
        value: Option<&str>,
        default: Duration,
        minimum: Duration,
    ) -> Duration {
        let Some(text) = value else {
            return default;
        };
        match parse_duration(text) {
            Ok(duration) if duration >= minimum => duration,
            Ok(_) if minimum == Duration::from_millis(1) => {
                self.fail(key, "must be greater than zero");
                default
            }
            Ok(_) => {
                self.fail(
                    key,
                    format!("must be at least {}", format_duration(minimum)),
                );
                default
            }
            Err(message) => {
                self.fail(key, message);
                default
            }
        }
    }

    /// A size in bytes ("8MiB"), `default` when absent.
    pub(super) fn size(&mut self, key: String, value: Option<&str>, default: u64) -> u64 {
        match value {
            None => default,
            Some(text) => parse_size(text).unwrap_or_else(|message| {
                self.fail(key, message);
                default
            }),
        }
    }

    /// One of `options` by name; `default` when absent, `None` (a problem) when not listed.
    pub(super) fn choice<T: Copy>(
        &mut self,
        key: String,
        value: Option<&str>,
        default: T,
        options: &[(&str, T)],
    ) -> Option<T> {
        let Some(text) = value else {
            return Some(default);
        };
        let found = options.iter().find(|(name, _)| *name == text);
        if found.is_none() {
            let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
            self.fail(key, format!("`{text}` is not one of: {}", names.join(", ")));
        }
        found.map(|(_, choice)| *choice)
    }

    /// Resolves a reference to an item of another section by its name.
    pub(super) fn resolve(
        &mut self,
        key: String,
        names: &Names<'_>,
        name: &str,
        missing: impl FnOnce(&Names<'_>) -> String,
    ) -> Option<usize> {
        let found = names.get(name);
        let refused = names
            .section
            .is_some_and(|section| self.invalid.contains(&format!("{section}.{name}")));
        if found.is_none() && !refused {
            self.fail(key, missing(names));
        }
        found
    }

    /// Each item a CIDR or a single address (a /32 or /128).
    pub(super) fn cidrs(&mut self, key: &str, values: &[String]) -> Vec<IpNet> {
        let mut nets = Vec::with_capacity(values.len());
        for (index, text) in values.iter().enumerate() {
            match parse_cidr(text) {
                Some(net) => nets.push(net),
                None => self.fail(
                    format!("{key}[{index}]"),
                    format!("`{text}` is not a CIDR (like 10.0.0.0/8) or an IP address"),
                ),
            }
        }
        nets
    }

    /// An IP:port, or a host:port resolved once, now.
    pub(super) fn socket_addr(&mut self, key: String, text: &str) -> Option<SocketAddr> {
        if let Ok(address) = text.parse::<SocketAddr>() {
            return Some(address);
        }
        match text.to_socket_addrs().map(|mut addrs| addrs.next()) {
            Ok(Some(address)) => Some(address),
            _ => {
                self.fail(
                    key,
                    format!(
                        "`{text}` is not an address like 127.0.0.1:8080 or a resolvable host:port"
                    ),
                );
                None
            }
        }
    }

    pub(super) fn header_name(&mut self, key: String, text: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(text.as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                self.fail(key, format!("`{text}` is not a valid HTTP header name"));
                None
            }
        }
    }

    pub(super) fn header_value(&mut self, key: String, text: &str) -> Option<HeaderValue> {
        match HeaderValue::from_str(text) {
            Ok(value) => Some(value),
            Err(_) => {
                self.fail(key, format!("`{text}` is not a valid HTTP header value"));
                None
            }
        }
    }
}

/// Name -> position of the items of one section (upstreams, JWT providers, policies), for the
/// routes that refer to them by name.
pub(super) struct Names<'a> {
    index: HashMap<&'a str, usize>,
    /// Where the items are defined (`auth.jwt.providers`), when refused ones are left out.
    section: Option<&'static str>,
}

impl<'a> Names<'a> {
    pub(super) fn of<T>(items: &'a [T], name: impl Fn(&'a T) -> &'a str) -> Self {
        Names {
            index: items
                .iter()
                .enumerate()
                .map(|(position, item)| (name(item), position))
                .collect(),
            section: None,
        }
    }

    /// Items of `section` that failed validation are not in the list: referring to one is
    /// not reported again.
    pub(super) fn of_section(mut self, section: &'static str) -> Self {
        self.section = Some(section);
        self
    }

    pub(super) fn get(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Every name, sorted and comma-separated ("none" when there are none), for messages.
    pub(super) fn listed(&self) -> String {
        let mut names: Vec<&str> = self.index.keys().copied().collect();
        names.sort_unstable();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    }
}

fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// "100ms", "1s": the way a minimum is written in the YAML.
fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

/// Names used as metric labels must stay readable and bounded.
pub(super) fn is_label_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
