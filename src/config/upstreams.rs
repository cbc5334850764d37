//! Validation of `upstreams`: targets, selection, health checks and outlier detection.

use super::check::{is_label_safe, Checker};
use super::model::*;
use super::raw::*;
use std::time::Duration;

const MAX_TARGET_WEIGHT: u32 = 10_000;

/// Validates one pool, `upstreams.NAME`.
pub(super) fn upstream_spec(check: &mut Checker, name: &str, raw: RawUpstream) -> UpstreamSpec {
    let key = format!("upstreams.{name}");
    let RawUpstream {
        targets,
        selection,
        hash_key,
        tls,
        http2,
        connect_timeout,
        read_timeout,
        write_timeout,
        idle_timeout,
        health_check,
        outlier_detection,
        max_concurrent_requests,
    } = raw;
    if !is_label_safe(name) {
        check.fail(
            key.clone(),
            "upstream names may use only letters, digits, `-`, `_` and `.`",
        );
    }
    let targets = target_specs(check, &key, targets);
    let selection = selection_of(check, &key, selection.as_deref());
    let hash_key = hash_key_of(check, &key, hash_key.as_deref(), selection);
    let tls = tls.map(|RawUpstreamTls { sni, verify }| UpstreamTls {
        sni: sni.unwrap_or_default(),
        verify: verify.unwrap_or(true),
    });
    let health_check =
        health_check.map(|raw| health_check_spec(check, &format!("{key}.health_check"), raw));
    if let Some(HealthCheckSpec {
        probe: Probe::Grpc { .. },
        ..
    }) = &health_check
    {
        if http2 != Some(true) {
            check.fail(
                format!("{key}.health_check.type"),
                "`grpc` checks speak HTTP/2: the upstream needs `http2: true`",
            );
        }
    }
    let outlier_detection =
        outlier_detection.map(|raw| outlier_spec(check, &format!("{key}.outlier_detection"), raw));
    if max_concurrent_requests == Some(0) {
        check.fail(
            format!("{key}.max_concurrent_requests"),
            "must be at least 1",
        );
    }
    let mut timeout = |field: &str, value: Option<String>, default: u64| {
        check.positive_duration(
            format!("{key}.{field}"),
            value.as_deref(),
            Duration::from_secs(default),
        )
    };
    UpstreamSpec {
        name: name.to_string(),
        targets,
        selection,
        hash_key,
        tls,
        http2: http2.unwrap_or(false),
        connect_timeout: timeout("connect_timeout", connect_timeout, 1),
        read_timeout: timeout("read_timeout", read_timeout, 30),
        write_timeout: timeout("write_timeout", write_timeout, 30),
        idle_timeout: timeout("idle_timeout", idle_timeout, 60),
        health_check,
        outlier_detection,
        max_concurrent_requests,
    }
}

fn target_specs(check: &mut Checker, key: &str, raw: Vec<RawTarget>) -> Vec<TargetSpec> {
    if raw.is_empty() {
        check.fail(format!("{key}.targets"), "a pool needs at least one target");
    }
    let mut targets: Vec<TargetSpec> = Vec::with_capacity(raw.len());
    for (index, RawTarget { address, weight }) in raw.into_iter().enumerate() {
        let target_key = format!("{key}.targets[{index}]");
        let weight = weight.unwrap_or(1);
        if weight > MAX_TARGET_WEIGHT {
            check.fail(
                format!("{target_key}.weight"),
                format!("must be at most {MAX_TARGET_WEIGHT}"),
            );
        }
        if let Some(address) = check.socket_addr(format!("{target_key}.address"), &address) {
            if targets.iter().any(|t| t.address == address) {
                check.fail(
                    format!("{target_key}.address"),
                    format!("{address} is listed twice"),
                );
            }
            targets.push(TargetSpec { address, weight });
        }
    }
    if !targets.is_empty() && targets.iter().all(|t| t.weight == 0) {
        check.fail(
            format!("{key}.targets"),
            "every target has weight 0: the pool could never serve",
        );
    }
    targets
}

fn selection_of(check: &mut Checker, key: &str, raw: Option<&str>) -> Selection {
    check
        .choice(
            format!("{key}.selection"),
            raw,
            Selection::WeightedRoundRobin,
            &[
                ("round_robin", Selection::RoundRobin),
                ("weighted_round_robin", Selection::WeightedRoundRobin),
                ("random", Selection::Random),
                ("consistent_hash", Selection::ConsistentHash),
                ("least_requests", Selection::LeastRequests),
            ],
        )
        .unwrap_or(Selection::RoundRobin)
}

fn hash_key_of(check: &mut Checker, key: &str, raw: Option<&str>, selection: Selection) -> HashKey {
    let field = format!("{key}.hash_key");
    match raw {
        None => HashKey::ClientIp,
        Some(_) if selection != Selection::ConsistentHash => {
            check.fail(field, "only applies to `selection: consistent_hash`");
            HashKey::ClientIp
        }
        Some("client_ip") => HashKey::ClientIp,
        Some("path") => HashKey::Path,
        Some(other) => match other.split_once(':') {
            Some(("header", header)) => check
                .header_name(field, header)
                .map_or(HashKey::ClientIp, HashKey::Header),
            Some(("claim", claim)) if !claim.is_empty() => HashKey::Claim(claim.to_string()),
            _ => {
                check.fail(
                    field,
                    format!("`{other}` is not one of: client_ip, path, header:NAME, claim:NAME"),
                );
                HashKey::ClientIp
            }
        },
    }
}

fn outlier_spec(check: &mut Checker, key: &str, raw: RawOutlierDetection) -> OutlierSpec {
    let RawOutlierDetection {
        consecutive_5xx,
        consecutive_gateway_failures,
        base_ejection_time,
        max_ejection_time,
        max_ejection_percent,
    } = raw;
    let spec = OutlierSpec {
        consecutive_5xx: consecutive_5xx.unwrap_or(5),
        consecutive_gateway_failures: consecutive_gateway_failures.unwrap_or(3),
        base_ejection_time: check.positive_duration(
            format!("{key}.base_ejection_time"),
            base_ejection_time.as_deref(),
            Duration::from_secs(30),
        ),
        max_ejection_time: check.positive_duration(
            format!("{key}.max_ejection_time"),
            max_ejection_time.as_deref(),
            Duration::from_secs(300),
        ),
        max_ejection_percent: max_ejection_percent.unwrap_or(50),
    };
    if spec.consecutive_5xx == 0 && spec.consecutive_gateway_failures == 0 {
        check.fail(
            key.to_string(),
            "both consecutive_5xx and consecutive_gateway_failures are 0: nothing could eject",
        );
    }
    if spec.max_ejection_time < spec.base_ejection_time {
        check.fail(
            format!("{key}.max_ejection_time"),
            "must not be shorter than base_ejection_time",
        );
    }
    if spec.max_ejection_percent > 100 {
        check.fail(
            format!("{key}.max_ejection_percent"),
            "must be between 0 and 100",
        );
    }
    spec
}

fn health_check_spec(check: &mut Checker, key: &str, raw: RawHealthCheck) -> HealthCheckSpec {
    let RawHealthCheck {
        kind,
        path,
        host,
        expected_statuses,
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
    } = raw;
    let probe = probe_of(check, key, kind.as_deref(), path, host, expected_statuses);
    let interval = check.positive_duration(
        format!("{key}.interval"),
        interval.as_deref(),
        Duration::from_secs(5),
    );
    let timeout = check.positive_duration(
        format!("{key}.timeout"),
        timeout.as_deref(),
        Duration::from_secs(1),
    );
    if timeout > interval {
        check.fail(
            format!("{key}.timeout"),
            "must not be longer than the interval",
        );
    }
    let healthy_threshold = healthy_threshold.unwrap_or(2);
    let unhealthy_threshold = unhealthy_threshold.unwrap_or(3);
    for (value, field) in [
        (healthy_threshold, "healthy_threshold"),
        (unhealthy_threshold, "unhealthy_threshold"),
    ] {
        if !(1..=100).contains(&value) {
            check.fail(format!("{key}.{field}"), "must be between 1 and 100");
        }
    }
    HealthCheckSpec {
        probe,
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
    }
}

/// What a health check asks: HTTP (the default), a TCP connect, or grpc.health.v1.
fn probe_of(
    check: &mut Checker,
    key: &str,
    kind: Option<&str>,
    path: Option<String>,
    host: Option<String>,
    expected_statuses: Option<Vec<u16>>,
) -> Probe {
    match kind.unwrap_or("http") {
        "http" => http_probe(check, key, path, host, expected_statuses),
        "tcp" => {
            let http_only = [
                (path.is_some(), "path"),
                (host.is_some(), "host"),
                (expected_statuses.is_some(), "expected_statuses"),
            ];
            not_for_probe(check, key, &http_only, "only applies to `type: http`");
            Probe::Tcp
        }
        "grpc" => {
            let http_only = [
                (path.is_some(), "path"),
                (expected_statuses.is_some(), "expected_statuses"),
            ];
            not_for_probe(
                check,
                key,
                &http_only,
                "does not apply to `type: grpc` (grpc.health.v1.Health/Check, SERVING)",
            );
            if let Some(host) = &host {
                check.header_value(format!("{key}.host"), host);
            }
            Probe::Grpc { host }
        }
        other => {
            check.fail(
                format!("{key}.type"),
                format!("`{other}` is not one of: http, tcp, grpc"),
            );
            Probe::Tcp
        }
    }
}

fn not_for_probe(check: &mut Checker, key: &str, fields: &[(bool, &str)], message: &str) {
    for (present, field) in fields {
        if *present {
            check.fail(format!("{key}.{field}"), message);
        }
    }
}

fn http_probe(
    check: &mut Checker,
    key: &str,
    path: Option<String>,
    host: Option<String>,
    expected_statuses: Option<Vec<u16>>,
) -> Probe {
    let path = path.unwrap_or_else(|| "/".into());
    if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
        check.fail(
            format!("{key}.path"),
            format!("`{path}` is not a path starting with /"),
        );
    }
    let expected_statuses = expected_statuses.unwrap_or_else(|| vec![200]);
    if expected_statuses.is_empty() || expected_statuses.iter().any(|s| !(100..=599).contains(s)) {
        check.fail(
            format!("{key}.expected_statuses"),
            "must list HTTP status codes (100-599)",
        );
    }
    if let Some(host) = &host {
        check.header_value(format!("{key}.host"), host);
    }
    Probe::Http {
        path,
        host,
        expected_statuses,
    }
}
