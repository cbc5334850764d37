//! Raw YAML types -> [`Model`]. Collects every problem instead of stopping at the first.

use super::model::*;
use super::raw::*;
use super::units::{parse_duration, parse_size};
use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

/// Pingora refuses request heads above this many bytes whatever we configure.
const PINGORA_MAX_HEADER_BYTES: u64 = 1_048_575;
const MAX_TARGET_WEIGHT: u32 = 10_000;
const MAX_RETRY_ATTEMPTS: u32 = 5;

type Problems = Vec<(String, String)>;

/// Collects validation problems; shared with `auth.rs`.
pub(super) struct Checker {
    problems: Problems,
}

impl Checker {
    pub(super) fn problem_count(&self) -> usize {
        self.problems.len()
    }

    pub(super) fn fail(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push((key.into(), message.into()));
    }

    pub(super) fn duration(
        &mut self,
        key: String,
        value: &Option<String>,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(text) => parse_duration(text).unwrap_or_else(|message| {
                self.fail(key, message);
                default
            }),
        }
    }

    pub(super) fn positive_duration(
        &mut self,
        key: String,
        value: &Option<String>,
        default: Duration,
    ) -> Duration {
        let duration = self.duration(key.clone(), value, default);
        if duration.is_zero() {
            self.fail(key, "must be greater than zero");
        }
        duration
    }

    pub(super) fn size(&mut self, key: String, value: &Option<String>, default: u64) -> u64 {
        match value {
            None => default,
            Some(text) => parse_size(text).unwrap_or_else(|message| {
                self.fail(key, message);
                default
            }),
        }
    }

    fn unsupported(&mut self, key: String, value: &Unsupported, issue: &str) {
        if value.is_some() {
            self.fail(
                key,
                format!("is not supported yet by this edgegate release ({issue}); remove it"),
            );
        }
    }

    fn cidrs(&mut self, key: &str, values: &[String]) -> Vec<IpNet> {
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

    fn socket_addr(&mut self, key: String, text: &str) -> Option<SocketAddr> {
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

    fn header_value(&mut self, key: String, text: &str) -> Option<HeaderValue> {
        match HeaderValue::from_str(text) {
            Ok(value) => Some(value),
            Err(_) => {
                self.fail(key, format!("`{text}` is not a valid HTTP header value"));
                None
            }
        }
    }
}

fn parse_cidr(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Validates `raw`; on failure returns (key path, message) pairs.
pub fn validate(raw: RawConfig, source: &Path, source_hash: u64) -> Result<Model, Problems> {
    let mut check = Checker {
        problems: Vec::new(),
    };
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
    } = raw;

    let any_route_caches = routes.iter().any(|r| r.cache.is_some());
    let cache = super::cache::cache_settings(&mut check, cache, any_route_caches);

    let server = server_settings(&mut check, server);
    let listeners = listener_specs(&mut check, listeners);
    let admin_address = match admin {
        None => SocketAddr::from(([127, 0, 0, 1], 9901)),
        Some(RawAdmin { address }) => check
            .socket_addr("admin.address".into(), &address)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901))),
    };
    if listeners.iter().any(|l| l.address == admin_address) {
        check.fail(
            "admin.address",
            format!("{admin_address} is also a proxy listener"),
        );
    }
    let access_log = access_log_spec(&mut check, access_log);

    let mut upstream_index = HashMap::new();
    let mut upstream_specs = Vec::with_capacity(upstreams.len());
    for (name, upstream) in upstreams {
        let spec = upstream_spec(&mut check, &name, upstream);
        upstream_index.insert(name, upstream_specs.len());
        upstream_specs.push(spec);
    }

    let auth = super::auth::auth_spec(&mut check, auth);
    let rate_limits = super::ratelimit::rate_limit_spec(&mut check, rate_limits);

    let mut route_names = HashSet::new();
    let mut route_specs = Vec::with_capacity(routes.len());
    for (index, route) in routes.into_iter().enumerate() {
        let key = format!("routes[{index}]");
        if !route_names.insert(route.name.clone()) {
            check.fail(
                format!("{key}.name"),
                format!("route name `{}` is used twice", route.name),
            );
        }
        if let Some(spec) = route_spec(
            &mut check,
            &key,
            route,
            &upstream_index,
            &auth,
            &rate_limits,
            cache.as_ref(),
        ) {
            route_specs.push(spec);
        }
    }
    if route_specs.is_empty() && check.problems.is_empty() {
        check.fail("routes", "at least one route is needed");
    }

    if !check.problems.is_empty() {
        return Err(check.problems);
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
        upstreams: upstream_specs,
        routes: route_specs,
    })
}

fn server_settings(check: &mut Checker, raw: RawServer) -> ServerSettings {
    let RawServer {
        threads,
        pid_file,
        upgrade_sock,
        grace_period,
        shutdown_timeout,
        keepalive_timeout,
        max_request_header_size,
        trusted_proxies,
        header_read_timeout,
        body_read_timeout,
        merge_slashes,
        path_encoded_slashes,
    } = raw;
    let encoded_slashes = match path_encoded_slashes.as_deref() {
        None | Some("reject") => EncodedSlashes::Reject,
        Some("keep") => EncodedSlashes::Keep,
        Some(other) => {
            check.fail(
                "server.path_encoded_slashes",
                format!("`{other}` is not one of: reject, keep"),
            );
            EncodedSlashes::Reject
        }
    };
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 || threads > 1024 {
        check.fail("server.threads", "must be between 1 and 1024");
    }
    let max_request_header_size = check.size(
        "server.max_request_header_size".into(),
        &max_request_header_size,
        64 << 10,
    );
    if !(1024..=PINGORA_MAX_HEADER_BYTES).contains(&max_request_header_size) {
        check.fail(
            "server.max_request_header_size",
            format!(
                "must be between 1KiB and {PINGORA_MAX_HEADER_BYTES} bytes (Pingora's own limit)"
            ),
        );
    }
    ServerSettings {
        threads,
        pid_file: pid_file.unwrap_or_else(|| "/tmp/edgegate.pid".into()),
        upgrade_sock: upgrade_sock.unwrap_or_else(|| "/tmp/edgegate-upgrade.sock".into()),
        grace_period: check.duration(
            "server.grace_period".into(),
            &grace_period,
            Duration::from_secs(10),
        ),
        shutdown_timeout: check.duration(
            "server.shutdown_timeout".into(),
            &shutdown_timeout,
            Duration::from_secs(5),
        ),
        keepalive_timeout: check.duration(
            "server.keepalive_timeout".into(),
            &keepalive_timeout,
            Duration::from_secs(60),
        ),
        max_request_header_size: max_request_header_size as usize,
        trusted_proxies: check.cidrs("server.trusted_proxies", &trusted_proxies),
        header_read_timeout: check.positive_duration(
            "server.header_read_timeout".into(),
            &header_read_timeout,
            Duration::from_secs(10),
        ),
        body_read_timeout: check.positive_duration(
            "server.body_read_timeout".into(),
            &body_read_timeout,
            Duration::from_secs(30),
        ),
        paths: PathRules {
            merge_slashes: merge_slashes.unwrap_or(true),
            encoded_slashes,
        },
    }
}

fn listener_specs(check: &mut Checker, raw: Vec<RawListener>) -> Vec<ListenerSpec> {
    if raw.is_empty() {
        check.fail("listeners", "at least one listener is needed");
    }
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    let mut specs = Vec::with_capacity(raw.len());
    for (index, listener) in raw.into_iter().enumerate() {
        let RawListener {
            name,
            address,
            tls,
            h2c,
            max_connections,
            max_connections_per_ip,
        } = listener;
        let key = format!("listeners[{index}]");
        for (field, value) in [
            ("max_connections", max_connections),
            ("max_connections_per_ip", max_connections_per_ip),
        ] {
            if value == Some(0) {
                check.fail(
                    format!("{key}.{field}"),
                    "must be at least 1 (omit it for no limit)",
                );
            }
        }
        if let (Some(total), Some(per_ip)) = (max_connections, max_connections_per_ip) {
            if per_ip > total {
                check.fail(
                    format!("{key}.max_connections_per_ip"),
                    format!("{per_ip} is more than the listener's max_connections ({total})"),
                );
            }
        }
        let tls = tls.and_then(|tls| listener_tls(check, &format!("{key}.tls"), tls));
        let h2c = h2c.unwrap_or(false);
        if h2c && tls.is_some() {
            check.fail(
                format!("{key}.h2c"),
                "h2c is HTTP/2 without TLS; a TLS listener offers h2 by ALPN (tls.http2)",
            );
        }
        if !names.insert(name.clone()) {
            check.fail(
                format!("{key}.name"),
                format!("listener name `{name}` is used twice"),
            );
        }
        if let Some(address) = check.socket_addr(format!("{key}.address"), &address) {
            if !addresses.insert(address) {
                check.fail(
                    format!("{key}.address"),
                    format!("{address} is listed twice"),
                );
            }
            specs.push(ListenerSpec {
                name,
                address,
                tls,
                h2c,
                max_connections,
                max_connections_per_ip,
            });
        }
    }
    specs
}

fn listener_tls(check: &mut Checker, key: &str, raw: RawListenerTls) -> Option<ListenerTls> {
    let RawListenerTls {
        certificates,
        http2,
        min_version,
        client_ca,
        client_auth,
    } = raw;
    let problems = check.problem_count();
    if certificates.is_empty() {
        check.fail(
            format!("{key}.certificates"),
            "at least one certificate is needed",
        );
    }
    let mut specs = Vec::with_capacity(certificates.len());
    for (index, raw) in certificates.into_iter().enumerate() {
        let item = format!("{key}.certificates[{index}]");
        let server_names = raw.server_names.map(|names| {
            names
                .iter()
                .enumerate()
                .filter_map(|(position, name)| {
                    let name_key = format!("{item}.server_names[{position}]");
                    let valid = crate::tls::certs::server_name(name);
                    if valid.is_none() {
                        check.fail(
                            name_key,
                            format!("`{name}` is not a host name (a leading `*.` is allowed)"),
                        );
                    }
                    valid
                })
                .collect::<Vec<_>>()
        });
        let spec = CertificateSpec {
            cert: raw.cert.into(),
            key: raw.key.into(),
            server_names,
        };
        if let Err(error) = crate::tls::certs::Certificate::load(&spec) {
            let field = match &error {
                crate::tls::certs::CertError::Read { path, .. }
                | crate::tls::certs::CertError::Invalid { path, .. }
                    if *path == spec.key =>
                {
                    "key"
                }
                _ => "cert",
            };
            check.fail(format!("{item}.{field}"), error.to_string());
        }
        specs.push(spec);
    }
    let min_version = match min_version {
        None => TlsVersion::Tls12,
        Some(version) => {
            let text = match version {
                RawTlsVersion::Text(text) => text,
                RawTlsVersion::Number(number) => format!("{number:.1}"),
            };
            match text.as_str() {
                "1.2" => TlsVersion::Tls12,
                "1.3" => TlsVersion::Tls13,
                _ => {
                    check.fail(
                        format!("{key}.min_version"),
                        format!("`{text}` is not \"1.2\" or \"1.3\" (TLS 1.0 and 1.1 are never accepted)"),
                    );
                    TlsVersion::Tls12
                }
            }
        }
    };
    let client_ca = client_ca.map(std::path::PathBuf::from);
    if let Some(path) = &client_ca {
        if let Err(error) = crate::tls::certs::load_ca(path) {
            check.fail(format!("{key}.client_ca"), error.to_string());
        }
    }
    let client_auth = match (client_auth.as_deref(), &client_ca) {
        (None, None) => ClientAuth::Off,
        (None | Some("required"), Some(_)) => ClientAuth::Required,
        (Some("optional"), Some(_)) => ClientAuth::Optional,
        (Some("required" | "optional"), None) => {
            check.fail(
                format!("{key}.client_auth"),
                "needs client_ca (the CA bundle client certificates are verified against)",
            );
            ClientAuth::Off
        }
        (Some(other), _) => {
            check.fail(
                format!("{key}.client_auth"),
                format!("`{other}` is not `required` or `optional`"),
            );
            ClientAuth::Off
        }
    };
    (check.problem_count() == problems).then_some(ListenerTls {
        certificates: specs,
        http2: http2.unwrap_or(true),
        min_version,
        client_ca,
        client_auth,
    })
}

fn access_log_spec(check: &mut Checker, raw: Option<RawAccessLog>) -> AccessLogSpec {
    let Some(RawAccessLog { format, path }) = raw else {
        return AccessLogSpec::Stdout;
    };
    match format.as_deref().unwrap_or("json") {
        "off" => AccessLogSpec::Off,
        "json" => match path.as_deref() {
            None | Some("stdout") => AccessLogSpec::Stdout,
            Some("") => {
                check.fail("access_log.path", "must be `stdout` or a file path");
                AccessLogSpec::Off
            }
            Some(file) => AccessLogSpec::File(file.into()),
        },
        other => {
            check.fail(
                "access_log.format",
                format!("`{other}` is not one of: json, off"),
            );
            AccessLogSpec::Off
        }
    }
}

fn upstream_spec(check: &mut Checker, name: &str, raw: RawUpstream) -> UpstreamSpec {
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

    if targets.is_empty() {
        check.fail(format!("{key}.targets"), "a pool needs at least one target");
    }
    let mut target_specs = Vec::with_capacity(targets.len());
    for (index, RawTarget { address, weight }) in targets.into_iter().enumerate() {
        let target_key = format!("{key}.targets[{index}]");
        let weight = weight.unwrap_or(1);
        if weight > MAX_TARGET_WEIGHT {
            check.fail(
                format!("{target_key}.weight"),
                format!("must be at most {MAX_TARGET_WEIGHT}"),
            );
        }
        if let Some(address) = check.socket_addr(format!("{target_key}.address"), &address) {
            if target_specs
                .iter()
                .any(|t: &TargetSpec| t.address == address)
            {
                check.fail(
                    format!("{target_key}.address"),
                    format!("{address} is listed twice"),
                );
            }
            target_specs.push(TargetSpec { address, weight });
        }
    }
    if !target_specs.is_empty() && target_specs.iter().all(|t| t.weight == 0) {
        check.fail(
            format!("{key}.targets"),
            "every target has weight 0: the pool could never serve",
        );
    }

    let selection = match selection.as_deref().unwrap_or("weighted_round_robin") {
        "round_robin" => Selection::RoundRobin,
        "weighted_round_robin" => Selection::WeightedRoundRobin,
        "random" => Selection::Random,
        "consistent_hash" => Selection::ConsistentHash,
        "least_requests" => Selection::LeastRequests,
        other => {
            check.fail(
                format!("{key}.selection"),
                format!(
                    "`{other}` is not one of: round_robin, weighted_round_robin, random, consistent_hash, least_requests"
                ),
            );
            Selection::RoundRobin
        }
    };
    let hash_key = match hash_key.as_deref() {
        None => HashKey::ClientIp,
        Some(_) if selection != Selection::ConsistentHash => {
            check.fail(
                format!("{key}.hash_key"),
                "only applies to `selection: consistent_hash`",
            );
            HashKey::ClientIp
        }
        Some("client_ip") => HashKey::ClientIp,
        Some("path") => HashKey::Path,
        Some(other) => match other.split_once(':') {
            Some(("header", header)) => check
                .header_name(format!("{key}.hash_key"), header)
                .map_or(HashKey::ClientIp, HashKey::Header),
            Some(("claim", claim)) if !claim.is_empty() => HashKey::Claim(claim.to_string()),
            _ => {
                check.fail(
                    format!("{key}.hash_key"),
                    format!("`{other}` is not one of: client_ip, path, header:NAME, claim:NAME"),
                );
                HashKey::ClientIp
            }
        },
    };
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
    UpstreamSpec {
        name: name.to_string(),
        targets: target_specs,
        selection,
        hash_key,
        tls,
        http2: http2.unwrap_or(false),
        connect_timeout: check.positive_duration(
            format!("{key}.connect_timeout"),
            &connect_timeout,
            Duration::from_secs(1),
        ),
        read_timeout: check.positive_duration(
            format!("{key}.read_timeout"),
            &read_timeout,
            Duration::from_secs(30),
        ),
        write_timeout: check.positive_duration(
            format!("{key}.write_timeout"),
            &write_timeout,
            Duration::from_secs(30),
        ),
        idle_timeout: check.positive_duration(
            format!("{key}.idle_timeout"),
            &idle_timeout,
            Duration::from_secs(60),
        ),
        health_check,
        outlier_detection,
        max_concurrent_requests,
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
            &base_ejection_time,
            Duration::from_secs(30),
        ),
        max_ejection_time: check.positive_duration(
            format!("{key}.max_ejection_time"),
            &max_ejection_time,
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
    let probe = match kind.as_deref().unwrap_or("http") {
        "tcp" => {
            for (present, field) in [
                (path.is_some(), "path"),
                (host.is_some(), "host"),
                (expected_statuses.is_some(), "expected_statuses"),
            ] {
                if present {
                    check.fail(format!("{key}.{field}"), "only applies to `type: http`");
                }
            }
            Probe::Tcp
        }
        "grpc" => {
            for (present, field) in [
                (path.is_some(), "path"),
                (expected_statuses.is_some(), "expected_statuses"),
            ] {
                if present {
                    check.fail(
                        format!("{key}.{field}"),
                        "does not apply to `type: grpc` (grpc.health.v1.Health/Check, SERVING)",
                    );
                }
            }
            if let Some(host) = &host {
                check.header_value(format!("{key}.host"), host);
            }
            Probe::Grpc { host }
        }
        "http" => {
            let path = path.unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
                check.fail(
                    format!("{key}.path"),
                    format!("`{path}` is not a path starting with /"),
                );
            }
            let expected_statuses = expected_statuses.unwrap_or_else(|| vec![200]);
            if expected_statuses.is_empty()
                || expected_statuses.iter().any(|s| !(100..=599).contains(s))
            {
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
        other => {
            check.fail(
                format!("{key}.type"),
                format!("`{other}` is not one of: http, tcp, grpc"),
            );
            Probe::Tcp
        }
    };
    let interval =
        check.positive_duration(format!("{key}.interval"), &interval, Duration::from_secs(5));
    let timeout =
        check.positive_duration(format!("{key}.timeout"), &timeout, Duration::from_secs(1));
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

fn route_spec(
    check: &mut Checker,
    key: &str,
    raw: RawRoute,
    upstreams: &HashMap<String, usize>,
    auth_spec: &AuthSpec,
    rate_limit_spec: &RateLimitSpec,
    cache_settings: Option<&CacheSettings>,
) -> Option<RouteSpec> {
    let RawRoute {
        name,
        matcher,
        upstream,
        split,
        strip_prefix,
        auth,
        rate_limits,
        cache,
        timeout,
        retries,
        max_body_size,
        request_headers,
        response_headers,
        cors,
        grpc,
        websocket,
        ip_allow,
        ip_deny,
        aggregate,
    } = raw;
    if name.is_empty() || !is_label_safe(&name) {
        check.fail(
            format!("{key}.name"),
            "route names must be non-empty and use only letters, digits, `-`, `_` and `.`",
        );
    }
    let auth = super::auth::route_auth(check, &format!("{key}.auth"), auth, auth_spec);
    let rate_limits = super::ratelimit::route_policies(
        check,
        &format!("{key}.rate_limits"),
        rate_limits,
        rate_limit_spec,
    );
    let cache = super::cache::route_cache(check, &format!("{key}.cache"), cache, cache_settings);
    check.unsupported(format!("{key}.cors"), &cors, "CORS is not implemented yet");
    check.unsupported(
        format!("{key}.aggregate"),
        &aggregate,
        "aggregation routes are not implemented yet",
    );

    let matcher = match_spec(check, &format!("{key}.match"), matcher);
    let lookup = |check: &mut Checker, field: String, name: &str| -> Option<usize> {
        let found = upstreams.get(name).copied();
        if found.is_none() {
            check.fail(
                field,
                format!(
                    "no upstream named `{name}` (defined: {})",
                    names_of(upstreams)
                ),
            );
        }
        found
    };
    let target = match (upstream, split) {
        (Some(upstream), None) => {
            lookup(check, format!("{key}.upstream"), &upstream).map(RouteTarget::Upstream)
        }
        (None, Some(split)) => {
            let mut branches = Vec::with_capacity(split.len());
            for (index, RawSplit { upstream, weight }) in split.into_iter().enumerate() {
                if let Some(found) =
                    lookup(check, format!("{key}.split[{index}].upstream"), &upstream)
                {
                    branches.push(SplitTarget {
                        upstream: found,
                        weight,
                    });
                }
            }
            if branches.iter().map(|b| u64::from(b.weight)).sum::<u64>() == 0 {
                check.fail(
                    format!("{key}.split"),
                    "the weights must add up to more than 0",
                );
            }
            Some(RouteTarget::Split(branches))
        }
        (Some(_), Some(_)) => {
            check.fail(
                format!("{key}.split"),
                "give either `upstream` or `split`, not both",
            );
            None
        }
        (None, None) => {
            check.fail(key.to_string(), "needs `upstream` or `split`");
            None
        }
    };
    if let Some(prefix) = &strip_prefix {
        if !prefix.starts_with('/') || prefix.len() < 2 || prefix.ends_with('/') {
            check.fail(
                format!("{key}.strip_prefix"),
                format!("`{prefix}` must start with / and not end with / (like /api/v1)"),
            );
        }
    }
    let timeout = timeout.map(|text| match parse_duration(&text) {
        Ok(duration) if !duration.is_zero() => duration,
        Ok(_) => {
            check.fail(format!("{key}.timeout"), "must be greater than zero");
            Duration::from_secs(1)
        }
        Err(message) => {
            check.fail(format!("{key}.timeout"), message);
            Duration::from_secs(1)
        }
    });
    let retries = retry_policy(check, &format!("{key}.retries"), retries);
    let max_body_size = check.size(format!("{key}.max_body_size"), &max_body_size, 10 << 20);
    let request_headers = header_ops(check, &format!("{key}.request_headers"), request_headers);
    let response_headers = header_ops(check, &format!("{key}.response_headers"), response_headers);
    let ip_allow = check.cidrs(&format!("{key}.ip_allow"), &ip_allow);
    let ip_deny = check.cidrs(&format!("{key}.ip_deny"), &ip_deny);
    let websocket_idle_timeout = check.positive_duration(
        format!("{key}.websocket.idle_timeout"),
        &websocket.and_then(|w| w.idle_timeout),
        DEFAULT_WEBSOCKET_IDLE_TIMEOUT,
    );
    Some(RouteSpec {
        name,
        matcher: matcher?,
        target: target?,
        strip_prefix,
        timeout,
        retries,
        max_body_size,
        request_headers,
        response_headers,
        ip_allow,
        ip_deny,
        auth,
        rate_limits,
        cache,
        grpc: grpc.unwrap_or(false),
        websocket_idle_timeout,
    })
}

fn names_of(upstreams: &HashMap<String, usize>) -> String {
    let mut names: Vec<&str> = upstreams.keys().map(String::as_str).collect();
    names.sort_unstable();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn match_spec(check: &mut Checker, key: &str, raw: RawMatch) -> Option<MatchSpec> {
    let RawMatch {
        hosts,
        path_prefix,
        path_exact,
        path_regex,
        methods,
        headers,
    } = raw;
    let before = check.problems.len();
    let mut host_patterns = Vec::with_capacity(hosts.len());
    for (index, host) in hosts.iter().enumerate() {
        let host = host.to_ascii_lowercase();
        let valid = |name: &str| {
            !name.is_empty()
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        };
        if let Some(suffix) = host.strip_prefix("*.") {
            if valid(suffix) {
                host_patterns.push(HostPattern::Suffix(format!(".{suffix}")));
                continue;
            }
        } else if valid(&host) {
            host_patterns.push(HostPattern::Exact(host));
            continue;
        }
        check.fail(
            format!("{key}.hosts[{index}]"),
            format!("`{host}` is not a host name or `*.suffix` (no port, no other wildcards)"),
        );
    }
    let path = match (path_prefix, path_exact, path_regex) {
        (None, None, None) => PathMatch::Any,
        (Some(prefix), None, None) => {
            if !prefix.starts_with('/') {
                check.fail(
                    format!("{key}.path_prefix"),
                    format!("`{prefix}` must start with /"),
                );
            }
            if prefix == "/" {
                PathMatch::Any
            } else {
                PathMatch::Prefix(prefix.trim_end_matches('/').to_string())
            }
        }
        (None, Some(exact), None) => {
            if !exact.starts_with('/') {
                check.fail(
                    format!("{key}.path_exact"),
                    format!("`{exact}` must start with /"),
                );
            }
            PathMatch::Exact(exact)
        }
        (None, None, Some(pattern)) => match regex::Regex::new(&pattern) {
            Ok(regex) => PathMatch::Regex(regex),
            Err(error) => {
                check.fail(
                    format!("{key}.path_regex"),
                    format!("invalid regex: {error}"),
                );
                PathMatch::Any
            }
        },
        _ => {
            check.fail(
                key.to_string(),
                "use only one of path_prefix, path_exact, path_regex",
            );
            PathMatch::Any
        }
    };
    let mut method_list = Vec::with_capacity(methods.len());
    for (index, method) in methods.iter().enumerate() {
        match Method::from_bytes(method.as_bytes()) {
            Ok(parsed) if method.bytes().all(|b| b.is_ascii_uppercase()) => {
                method_list.push(parsed)
            }
            _ => check.fail(
                format!("{key}.methods[{index}]"),
                format!("`{method}` is not an upper-case HTTP method like GET"),
            ),
        }
    }
    let mut header_list = Vec::with_capacity(headers.len());
    for (name, value) in &headers {
        let field = format!("{key}.headers.{name}");
        let parsed_name = check.header_name(field.clone(), name);
        let parsed_value = check.header_value(field, value);
        if let (Some(name), Some(value)) = (parsed_name, parsed_value) {
            header_list.push((name, value));
        }
    }
    (check.problems.len() == before).then_some(MatchSpec {
        hosts: host_patterns,
        path,
        methods: method_list,
        headers: header_list,
    })
}

fn retry_policy(check: &mut Checker, key: &str, raw: Option<RawRetries>) -> RetryPolicy {
    let Some(RawRetries {
        attempts,
        on,
        backoff,
    }) = raw
    else {
        return RetryPolicy {
            attempts: 1,
            on_connect_failure: true,
            on_gateway_error: false,
            on_5xx: false,
            on_reset: false,
            backoff: Duration::ZERO,
        };
    };
    let attempts = attempts.unwrap_or(1);
    if attempts > MAX_RETRY_ATTEMPTS {
        check.fail(
            format!("{key}.attempts"),
            format!("must be at most {MAX_RETRY_ATTEMPTS}"),
        );
    }
    let mut policy = RetryPolicy {
        attempts,
        on_connect_failure: false,
        on_gateway_error: false,
        on_5xx: false,
        on_reset: false,
        backoff: check.duration(format!("{key}.backoff"), &backoff, Duration::ZERO),
    };
    for (index, condition) in on
        .unwrap_or_else(|| vec!["connect_failure".into()])
        .iter()
        .enumerate()
    {
        match condition.as_str() {
            "connect_failure" => policy.on_connect_failure = true,
            "gateway_error" => policy.on_gateway_error = true,
            "5xx" => policy.on_5xx = true,
            "reset" => policy.on_reset = true,
            other => check.fail(
                format!("{key}.on[{index}]"),
                format!("`{other}` is not one of: connect_failure, gateway_error, 5xx, reset"),
            ),
        }
    }
    policy
}

/// Headers whose meaning belongs to the connection or the framing; editing them breaks proxying.
const PROTECTED_HEADERS: [&str; 5] = [
    "connection",
    "content-length",
    "transfer-encoding",
    "upgrade",
    "te",
];

fn header_ops(check: &mut Checker, key: &str, raw: Option<RawHeaderOps>) -> HeaderOps {
    let Some(RawHeaderOps { set, remove }) = raw else {
        return HeaderOps::default();
    };
    let mut ops = HeaderOps::default();
    let set: BTreeMap<String, String> = set;
    for (name, value) in &set {
        let field = format!("{key}.set.{name}");
        if let (Some(parsed_name), Some(parsed_value)) = (
            check.header_name(field.clone(), name),
            check.header_value(field.clone(), value),
        ) {
            if PROTECTED_HEADERS.contains(&parsed_name.as_str()) {
                check.fail(
                    field,
                    format!("`{name}` is managed by the proxy and cannot be set"),
                );
            } else {
                ops.set.push((parsed_name, parsed_value));
            }
        }
    }
    for (index, name) in remove.iter().enumerate() {
        let field = format!("{key}.remove[{index}]");
        if let Some(parsed) = check.header_name(field.clone(), name) {
            if PROTECTED_HEADERS.contains(&parsed.as_str()) {
                check.fail(
                    field,
                    format!("`{name}` is managed by the proxy and cannot be removed"),
                );
            } else {
                ops.remove.push(parsed);
            }
        }
    }
    ops
}

/// Names used as metric labels must stay readable and bounded.
fn is_label_safe(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
