//! Validation of `tracing` and a route's `tracing`.

use super::check::Checker;
use super::model::*;
use super::raw::*;
use std::time::Duration;

/// Finished requests waiting for export when `max_queue` is not given.
pub const DEFAULT_MAX_QUEUE: usize = 4096;

/// Validates the top-level `tracing` section.
pub(super) fn tracing_spec(check: &mut Checker, raw: Option<RawTracing>) -> Option<TracingSpec> {
    let RawTracing {
        otlp_endpoint,
        protocol,
        service_name,
        resource,
        sample_ratio,
        always_sample,
        max_queue,
    } = raw?;
    let before = check.problem_count();
    let endpoint = collector(&otlp_endpoint);
    if endpoint.is_none() {
        check.fail(
            "tracing.otlp_endpoint",
            format!("`{otlp_endpoint}` is not an OTLP/HTTP endpoint like http://127.0.0.1:4318 (plain http: a collector on the host or a sidecar)"),
        );
    }
    if let Some(protocol) = protocol.as_deref().filter(|p| *p != "http") {
        check.fail(
            "tracing.protocol",
            format!("`{protocol}`: only `http` (OTLP/HTTP with protobuf) is supported"),
        );
    }
    let sample_ratio = ratio(check, "tracing.sample_ratio", sample_ratio).unwrap_or(1.0);
    let (always_status_at_least, always_slower_than) = match always_sample {
        None => (None, None),
        Some(RawAlwaysSample {
            status_at_least,
            slower_than,
        }) => {
            if status_at_least.is_some_and(|s| !(100..=599).contains(&s)) {
                check.fail(
                    "tracing.always_sample.status_at_least",
                    "an HTTP status, 100 to 599",
                );
            }
            let slower_than = slower_than.map(|text| {
                check.positive_duration(
                    "tracing.always_sample.slower_than".into(),
                    Some(&text),
                    Duration::from_secs(1),
                )
            });
            (status_at_least, slower_than)
        }
    };
    if max_queue == Some(0) {
        check.fail("tracing.max_queue", "must be more than 0");
    }
    let service_name = service_name.unwrap_or_else(|| "edgegate".into());
    if service_name.is_empty() {
        check.fail("tracing.service_name", "must not be empty");
    }
    let (collector, collector_path) = endpoint?;
    (check.problem_count() == before).then_some(TracingSpec {
        collector,
        collector_path,
        service_name,
        resource: resource.into_iter().collect(),
        sample_ratio,
        always_status_at_least,
        always_slower_than,
        max_queue: max_queue.unwrap_or(DEFAULT_MAX_QUEUE),
    })
}

/// A route's `tracing.sample_ratio`.
pub(super) fn route_ratio(
    check: &mut Checker,
    key: &str,
    raw: Option<RawRouteTracing>,
    tracing_on: bool,
) -> Option<f64> {
    let raw = raw?;
    if !tracing_on {
        check.fail(
            key.to_string(),
            "there is no top-level `tracing` section to export this route's spans",
        );
    }
    ratio(check, &format!("{key}.sample_ratio"), raw.sample_ratio)
}

fn ratio(check: &mut Checker, key: &str, value: Option<f64>) -> Option<f64> {
    let value = value?;
    if (0.0..=1.0).contains(&value) {
        Some(value)
    } else {
        check.fail(
            key.to_string(),
            format!("{value} is not a ratio from 0 to 1"),
        );
        None
    }
}

/// `http://host:port[/path]` -> (`host:port`, path; `/v1/traces` when none is given).
fn collector(endpoint: &str) -> Option<(String, String)> {
    let rest = endpoint.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let (host, port) = authority.rsplit_once(':')?;
    if host.is_empty() || port.parse::<u16>().ok()? == 0 {
        return None;
    }
    let path = match path.trim_end_matches('/') {
        "" => "/v1/traces".to_string(),
        path => path.to_string(),
    };
    Some((authority.to_string(), path))
}

#[cfg(test)]
mod tests {
    use super::collector;

    #[test]
    fn endpoints_name_a_collector_and_default_to_the_traces_path() {
        assert_eq!(
            collector("http://127.0.0.1:4318"),
            Some(("127.0.0.1:4318".into(), "/v1/traces".into()))
        );
        assert_eq!(
            collector("http://otel.internal:4318/custom/traces"),
            Some(("otel.internal:4318".into(), "/custom/traces".into()))
        );
        assert_eq!(collector("https://127.0.0.1:4318"), None);
        assert_eq!(collector("http://127.0.0.1"), None);
        assert_eq!(collector("http://127.0.0.1:0"), None);
    }
}
