//! The YAML shape of the configuration, exactly as `reference.yaml` spells it.
//! These types never leave `config/`: `validate` turns them into the runtime model ([`Model`](super::Model)).

use serde::Deserialize;
use std::collections::BTreeMap;

/// A section that a later release implements; kept as an opaque value so it can be rejected by name.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    pub admin: Option<RawAdmin>,
    pub access_log: Option<RawAccessLog>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    pub auth: Option<RawAuth>,
    pub rate_limits: Option<RawRateLimits>,
    pub cache: Option<RawCache>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub tracing: Option<RawTracing>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    pub otlp_endpoint: String,
    pub protocol: Option<String>,
    pub service_name: Option<String>,
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
    pub sample_ratio: Option<f64>,
    pub always_sample: Option<RawAlwaysSample>,
    pub max_queue: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlwaysSample {
    pub status_at_least: Option<u16>,
    pub slower_than: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteTracing {
    pub sample_ratio: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub max_size: Option<String>,
    pub max_object_size: Option<String>,
    pub lock_timeout: Option<String>,
    pub default_ttl: Option<String>,
    pub stale_while_revalidate: Option<String>,
    pub stale_if_error: Option<String>,
    pub forward_cdn_cache_control: Option<bool>,
    pub tag_header: Option<String>,
    pub forward_tag_header: Option<bool>,
    pub purge_channel: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    pub ttl: Option<String>,
    pub vary: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    pub stale_while_revalidate: Option<String>,
    pub stale_if_error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    pub store: Option<String>,
    pub redis: Option<RawRedis>,
    pub max_keys: Option<u64>,
    #[serde(default)]
    pub policies: BTreeMap<String, RawPolicy>,
    #[serde(default)]
    pub quotas: BTreeMap<String, RawQuota>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    pub per: String,
    pub limit: u64,
    pub key: RawPolicyKey,
    pub tiers: Option<BTreeMap<String, u64>>,
    pub time_zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    pub url: Option<String>,
    pub timeout: Option<String>,
    pub on_error: Option<String>,
    pub sentinel: Option<RawSentinel>,
    pub cluster: Option<RawCluster>,
    pub username: Option<String>,
    pub password_file: Option<String>,
    pub password_env: Option<String>,
    pub tls: Option<bool>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSentinel {
    pub master_name: String,
    pub addresses: Vec<String>,
    pub db: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub addresses: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub algorithm: String,
    pub key: RawPolicyKey,
    pub limit: u64,
    pub window: String,
    pub burst: Option<u64>,
    pub tiers: Option<BTreeMap<String, u64>>,
    pub shadow: Option<bool>,
    pub sync: Option<RawSync>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    pub interval: String,
}

/// `key: client_ip` or `key: [consumer, header:X-Tenant]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPolicyKey {
    One(String),
    Composite(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub jwt: Option<RawJwt>,
    pub api_keys: Option<RawApiKeys>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwt {
    #[serde(default)]
    pub providers: BTreeMap<String, RawJwtProvider>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwtProvider {
    pub issuer: Option<String>,
    pub audiences: Option<Vec<String>>,
    #[serde(default)]
    pub algorithms: Vec<String>,
    pub jwks_url: Option<String>,
    pub jwks_file: Option<String>,
    pub public_key_file: Option<String>,
    pub secret_file: Option<String>,
    pub secret_env: Option<String>,
    pub jwks_refresh: Option<String>,
    pub clock_skew: Option<String>,
    pub require_claims: Option<Vec<String>>,
    pub token_from: Option<Vec<String>>,
    pub forward_claims: Option<BTreeMap<String, String>>,
    pub tier_claim: Option<String>,
    pub strip_token: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKeys {
    pub header: Option<String>,
    #[serde(default)]
    pub keys: Vec<RawApiKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApiKey {
    pub consumer: String,
    pub sha256: String,
    pub tier: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteAuth {
    pub jwt: Option<String>,
    pub api_key: Option<bool>,
    pub any_of: Option<Vec<String>>,
    #[serde(default)]
    pub require_roles: Vec<String>,
    #[serde(default)]
    pub require_scopes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub threads: Option<usize>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub grace_period: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub keepalive_timeout: Option<String>,
    pub max_request_header_size: Option<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    pub header_read_timeout: Option<String>,
    pub body_read_timeout: Option<String>,
    pub merge_slashes: Option<bool>,
    pub path_encoded_slashes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub address: String,
    pub tls: Option<RawListenerTls>,
    pub h2c: Option<bool>,
    pub max_connections: Option<u32>,
    pub max_connections_per_ip: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTls {
    pub certificates: Vec<RawCertificate>,
    pub http2: Option<bool>,
    pub min_version: Option<RawTlsVersion>,
    pub client_ca: Option<String>,
    pub client_auth: Option<String>,
}

/// `min_version: 1.2` (a YAML number) and `"1.2"` mean the same.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawTlsVersion {
    Text(String),
    Number(f64),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: String,
    pub key: String,
    pub server_names: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub format: Option<String>,
    pub path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub targets: Vec<RawTarget>,
    pub selection: Option<String>,
    pub hash_key: Option<String>,
    pub tls: Option<RawUpstreamTls>,
    pub http2: Option<bool>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub write_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub health_check: Option<RawHealthCheck>,
    pub outlier_detection: Option<RawOutlierDetection>,
    pub max_concurrent_requests: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTarget {
    pub address: String,
    pub weight: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub sni: Option<String>,
    pub verify: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    pub expected_statuses: Option<Vec<u16>>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlierDetection {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway_failures: Option<u32>,
    pub base_ejection_time: Option<String>,
    pub max_ejection_time: Option<String>,
    pub max_ejection_percent: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    pub upstream: Option<String>,
    pub split: Option<RawSplitForm>,
    pub strip_prefix: Option<String>,
    pub auth: Option<RawRouteAuth>,
    pub rate_limits: Option<Vec<String>>,
    pub cache: Option<RawRouteCache>,
    pub timeout: Option<String>,
    pub retries: Option<RawRetries>,
    pub max_body_size: Option<String>,
    pub request_headers: Option<RawHeaderOps>,
    pub response_headers: Option<RawHeaderOps>,
    pub cors: Option<RawCors>,
    pub grpc: Option<bool>,
    pub websocket: Option<RawWebsocket>,
    #[serde(default)]
    pub ip_allow: Vec<String>,
    #[serde(default)]
    pub ip_deny: Vec<String>,
    pub aggregate: Option<RawAggregate>,
    pub compression: Option<RawCompression>,
    pub tracing: Option<RawRouteTracing>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAggregate {
    pub timeout: Option<String>,
    pub max_part_size: Option<String>,
    pub parts: OrderedMap<RawPart>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPart {
    pub upstream: String,
    pub path: String,
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub required: Option<bool>,
    pub timeout: Option<String>,
}

/// A mapping whose entries keep the order they were written in.
#[derive(Debug)]
pub struct OrderedMap<T>(pub Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OrderedMap<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Entries<T> {
            type Value = OrderedMap<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(Entries(std::marker::PhantomData))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    pub algorithms: Option<Vec<String>>,
    pub min_size: Option<String>,
    pub content_types: Option<Vec<String>>,
    #[serde(default)]
    pub level: BTreeMap<String, u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    #[serde(default)]
    pub allow_origins: Vec<String>,
    pub allow_methods: Option<Vec<String>>,
    #[serde(default)]
    pub allow_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    pub max_age: Option<String>,
    pub allow_credentials: Option<bool>,
    pub reject_unknown_origins: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebsocket {
    pub idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    #[serde(default)]
    pub hosts: Vec<String>,
    pub path_prefix: Option<String>,
    pub path_exact: Option<String>,
    pub path_regex: Option<String>,
    pub path_template: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplit {
    pub upstream: String,
    pub weight: u32,
}

/// `split: [arms...]` or `split: { sticky, force, arms }`.
#[derive(Debug)]
pub enum RawSplitForm {
    Arms(Vec<RawSplit>),
    Full(RawSplitSpec),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplitSpec {
    pub sticky: Option<String>,
    pub force: Option<RawForce>,
    pub arms: Vec<RawSplit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForce {
    pub header: Option<String>,
    pub cookie: Option<String>,
}

// By hand rather than `untagged`, so a mistake inside either form is reported as that form's
// (an unknown key, a missing `arms`) instead of "did not match any variant".
impl<'de> Deserialize<'de> for RawSplitForm {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Form;
        impl<'de> serde::de::Visitor<'de> for Form {
            type Value = RawSplitForm;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of arms or a mapping with `arms`")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(RawSplitForm::Arms)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                Deserialize::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawSplitForm::Full)
            }
        }
        deserializer.deserialize_any(Form)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    pub attempts: Option<u32>,
    pub on: Option<Vec<String>>,
    pub backoff: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderOps {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}
