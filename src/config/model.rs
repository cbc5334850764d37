//! The validated configuration: resolved types only (addresses, durations, enums, compiled regexes).

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use regex::Regex;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything edgegate needs to run, checked and resolved.
#[derive(Debug, Clone)]
pub struct Model {
    /// The file this model was loaded from.
    pub source: PathBuf,
    /// A hash of the file's bytes, shown in `/status`.
    pub source_hash: u64,
    pub server: ServerSettings,
    pub listeners: Vec<ListenerSpec>,
    pub admin_address: SocketAddr,
    pub access_log: AccessLogSpec,
    pub auth: AuthSpec,
    pub rate_limits: RateLimitSpec,
    /// The shared response cache: present when the `cache` section is or any route caches.
    pub cache: Option<CacheSettings>,
    /// Indexed by `RouteTarget` and `SplitTarget`.
    pub upstreams: Vec<UpstreamSpec>,
    pub routes: Vec<RouteSpec>,
    /// OpenTelemetry traces (`None`: off; headers pass through untouched).
    pub tracing: Option<TracingSpec>,
}

/// `tracing`: spans exported over OTLP/HTTP, W3C trace context continued and sent upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSpec {
    /// The collector's `host:port` (plain HTTP).
    pub collector: String,
    /// The request path spans are POSTed to (`/v1/traces` unless the endpoint names one).
    pub collector_path: String,
    pub service_name: String,
    /// Resource attributes besides `service.name`.
    pub resource: Vec<(String, String)>,
    /// Share of new traces sampled (a client's sampled parent is always followed).
    pub sample_ratio: f64,
    /// Requests answered with at least this status are exported whatever the head decision.
    pub always_status_at_least: Option<u16>,
    /// Requests slower than this are exported whatever the head decision.
    pub always_slower_than: Option<Duration>,
    /// Finished requests waiting for export at most; beyond, their spans are dropped and counted.
    pub max_queue: usize,
}

/// Process-wide settings mapped onto Pingora's server configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub threads: usize,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub max_request_header_size: usize,
    pub trusted_proxies: Vec<IpNet>,
    /// A client must send its whole request head within this.
    pub header_read_timeout: Duration,
    /// Longest wait between two reads of a request body.
    pub body_read_timeout: Duration,
    pub paths: PathRules,
}

/// How request paths are normalized before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    /// `//a///b` -> `/a/b`.
    pub merge_slashes: bool,
    /// What `%2F` and `%5C` (and a raw `\`) in a path get.
    pub encoded_slashes: EncodedSlashes,
}

/// The treatment of encoded slashes and backslashes in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodedSlashes {
    /// 400: a backend that decodes them would see other path segments than the router did.
    Reject,
    /// Kept encoded (never decoded), so they stay inside their segment.
    Keep,
}

/// One listening socket: plain HTTP (optionally h2c) or TLS.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSpec {
    pub name: String,
    pub address: SocketAddr,
    /// TLS termination; `None` is plain HTTP.
    pub tls: Option<ListenerTls>,
    /// HTTP/2 with prior knowledge on a plain listener.
    pub h2c: bool,
    /// Over this many open connections, new ones are closed at once.
    pub max_connections: Option<u32>,
    /// Over this many open connections from one client address, its new ones are closed at once.
    pub max_connections_per_ip: Option<u32>,
}

/// TLS termination on a listener.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    /// Chosen by SNI; the first is the default for clients that name no known host.
    pub certificates: Vec<CertificateSpec>,
    /// Offer `h2` by ALPN.
    pub http2: bool,
    pub min_version: TlsVersion,
    /// Client certificates are requested and verified against this bundle.
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// One certificate chain and its private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSpec {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The names it serves; `None` = the certificate's own DNS names.
    pub server_names: Option<Vec<String>>,
}

/// The oldest TLS version a listener accepts (1.0 and 1.1 never are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    Off,
    /// Asked for; a client without one is served, one with a bad one is refused.
    Optional,
    /// A verified client certificate is needed to complete the handshake.
    Required,
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogSpec {
    Off,
    Stdout,
    File(PathBuf),
}

/// A named pool of backends.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    pub name: String,
    pub targets: Vec<TargetSpec>,
    pub selection: Selection,
    pub hash_key: HashKey,
    pub tls: Option<UpstreamTls>,
    pub http2: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub health_check: Option<HealthCheckSpec>,
    pub outlier_detection: Option<OutlierSpec>,
    pub max_concurrent_requests: Option<u32>,
}

/// Passive ejection of backends that fail live traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierSpec {
    /// Any 5xx in a row that ejects (0 = this trigger is off).
    pub consecutive_5xx: u32,
    /// Connect errors, timeouts, resets and 502/503/504 in a row that eject (0 = off).
    pub consecutive_gateway_failures: u32,
    pub base_ejection_time: Duration,
    pub max_ejection_time: Duration,
    /// At most this share (0-100) of the pool is ejected at once; one backend always may be.
    pub max_ejection_percent: u32,
}

/// One backend of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub address: SocketAddr,
    /// 0 means drained: never picked.
    pub weight: u32,
}

/// How a pool picks a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    RoundRobin,
    WeightedRoundRobin,
    Random,
    ConsistentHash,
    LeastRequests,
}

/// What a `consistent_hash` pool hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    ClientIp,
    Path,
    Header(HeaderName),
    /// A JWT claim of the authenticated request (the client IP when there is none).
    Claim(String),
}

/// TLS towards the backends of a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    pub sni: String,
    pub verify: bool,
}

/// An active health check.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckSpec {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// The kind of active probe.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Tcp,
    /// `grpc.health.v1.Health/Check` over HTTP/2.
    Grpc {
        /// `:authority` of the probe; None: the target's own address.
        host: Option<String>,
    },
    Http {
        path: String,
        /// None: the target's own address is the Host header.
        host: Option<String>,
        expected_statuses: Vec<u16>,
    },
}

/// One entry of the ordered route table.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub name: String,
    pub matcher: MatchSpec,
    pub target: RouteTarget,
    pub strip_prefix: Option<String>,
    /// The whole upstream exchange, retries included (None: only the pool's per-read timeout).
    pub timeout: Option<Duration>,
    pub retries: RetryPolicy,
    pub max_body_size: u64,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub ip_allow: Vec<IpNet>,
    pub ip_deny: Vec<IpNet>,
    pub auth: Option<RouteAuthSpec>,
    /// Indexes into `RateLimitSpec::policies`; every one must admit the request.
    pub rate_limits: Vec<usize>,
    /// Indexes into `RateLimitSpec::quotas` (named in the same `rate_limits` list).
    pub quotas: Vec<usize>,
    pub cache: Option<RouteCacheSpec>,
    /// Cross-origin requests from browsers (`None`: the route adds no CORS headers).
    pub cors: Option<crate::cors::CorsPolicy>,
    /// Responses compressed for clients that accept it (`None`: never).
    pub compression: Option<crate::compression::CompressionPolicy>,
    /// Errors the gateway answers itself are gRPC statuses, not JSON.
    pub grpc: bool,
    /// An upgraded (WebSocket) connection with no bytes either way for this long is closed.
    pub websocket_idle_timeout: Duration,
    /// `tracing.sample_ratio` for this route's new traces (None: the global ratio).
    pub trace_ratio: Option<f64>,
}

/// `routes[].websocket.idle_timeout` when not given.
pub const DEFAULT_WEBSOCKET_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The response cache every caching route shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Bytes held at most, headers and per-entry overhead included.
    pub max_size: usize,
    /// Larger responses are streamed through uncached.
    pub max_object_size: usize,
    /// How long concurrent misses on one key wait for the first fetch.
    pub lock_timeout: Duration,
    /// Heuristic freshness for responses without explicit freshness (zero: not stored).
    pub default_ttl: Duration,
    /// Staleness the operator grants every caching route on top of what origins allow.
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// `CDN-Cache-Control` and `Edgegate-Cache-Control` reach clients (else they are removed).
    pub forward_cdn_cache_control: bool,
    /// The response header listing an entry's purge tags.
    pub tag_header: HeaderName,
    /// The tag header reaches clients (else it is removed).
    pub forward_tag_header: bool,
    /// Redis pub/sub channel carrying purges to every instance (over `rate_limits.redis`).
    pub purge_channel: Option<String>,
}

/// How one route caches.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteCacheSpec {
    /// Freshness when the origin says nothing (the route's `ttl`, else `cache.default_ttl`);
    /// zero means such responses are not cached.
    pub ttl: Duration,
    /// Request headers whose values are part of the cache key.
    pub vary: Vec<HeaderName>,
    pub get: bool,
    pub head: bool,
    /// Staleness the operator grants this route (else `cache.stale_while_revalidate`).
    pub stale_while_revalidate: Duration,
    /// The same for serving a stale copy when the origin fails (else `cache.stale_if_error`).
    pub stale_if_error: Duration,
    /// `cache.forward_cdn_cache_control`.
    pub forward_cdn_cache_control: bool,
    /// `cache.tag_header`, removed from responses unless `cache.forward_tag_header`.
    pub tag_header: Option<HeaderName>,
}

/// The request predicates of a route; every present one must hold.
#[derive(Debug, Clone)]
pub struct MatchSpec {
    pub hosts: Vec<HostPattern>,
    pub path: PathMatch,
    pub methods: Vec<Method>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A host name to match, lower-case, without port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` stored as `.example.com`: any name ending with it.
    Suffix(String),
}

/// How the request path is compared.
#[derive(Debug, Clone)]
pub enum PathMatch {
    Any,
    Exact(String),
    /// Matches the prefix itself or the prefix followed by `/` (segment boundary).
    Prefix(String),
    Regex(Regex),
    /// Literal and named segments (`/users/{id}`); aggregation parts read the named ones.
    Template(crate::routing::template::PathTemplate),
}

/// Where a route sends its traffic.
#[derive(Debug, Clone, PartialEq)]
pub enum RouteTarget {
    Upstream(usize),
    Split(SplitSpec),
    /// Several backends answer one request together (`routes[].aggregate`).
    Aggregate(AggregateSpec),
}

/// `routes[].aggregate`: the parts fetched concurrently and merged into one JSON answer.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateSpec {
    /// The whole fan-out; a part not back by then is null and listed as failed.
    pub timeout: Duration,
    /// A part's body larger than this is dropped (`too_large`).
    pub max_part_size: usize,
    /// In configuration order (the order of the answer's `data`).
    pub parts: Vec<PartSpec>,
}

/// `routes[].aggregate.parts.NAME`.
#[derive(Debug, Clone, PartialEq)]
pub struct PartSpec {
    pub name: String,
    pub upstream: usize,
    pub method: http::Method,
    pub path: crate::aggregate::template::PartTemplate,
    pub headers: Vec<(HeaderName, crate::aggregate::template::PartTemplate)>,
    /// A failure of this part fails the whole answer (502, or 504 on a timeout).
    pub required: bool,
    /// Shorter than the route's `aggregate.timeout` (None: the route's).
    pub timeout: Option<Duration>,
}

/// A canary split across pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitSpec {
    pub arms: Vec<SplitTarget>,
    /// Keeps each caller on one arm (None: every request is placed by weight).
    pub sticky: Option<CallerKey>,
    /// A header or cookie naming the arm's upstream sends the request there.
    pub force: Option<ForceSource>,
}

/// Who the caller is, for sticky splits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerKey {
    Consumer,
    ClientIp,
    Cookie(String),
    Header(HeaderName),
}

/// Where a tester names the arm to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForceSource {
    Header(HeaderName),
    Cookie(String),
}

/// One weighted branch of a canary split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitTarget {
    pub upstream: usize,
    pub weight: u32,
}

/// When a failed upstream attempt is tried again on another backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// The connection could not be made (refused, connect timeout, TLS handshake).
    pub on_connect_failure: bool,
    /// A 502/503/504 answer, or no answer within the read timeout.
    pub on_gateway_error: bool,
    /// Any 5xx answer.
    pub on_5xx: bool,
    /// The connection broke after the request was sent, before a response.
    pub on_reset: bool,
    pub backoff: Duration,
}

/// Header edits applied in one place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderOps {
    /// Each replaces every copy of its header; a template without a value for the request
    /// removes the header instead.
    pub set: Vec<(HeaderName, crate::templates::HeaderTemplate)>,
    pub remove: Vec<HeaderName>,
}

/// Authentication providers, resolved at load (keys read, algorithms parsed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuthSpec {
    /// Indexed by `AuthMethod::Jwt`.
    pub jwt_providers: Vec<JwtProviderSpec>,
    pub api_keys: Option<ApiKeysSpec>,
}

/// One JWT issuer the gateway trusts.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtProviderSpec {
    pub name: String,
    pub issuer: Option<String>,
    /// Empty: `aud` not checked.
    pub audiences: Vec<String>,
    /// The only algorithms accepted (never `none`; all of the key's family).
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    pub keys: KeyMaterial,
    pub clock_skew: Duration,
    pub require_claims: Vec<String>,
    pub token_from: Vec<TokenSource>,
    /// Claim -> request header sent upstream.
    pub forward_claims: Vec<(String, HeaderName)>,
    pub tier_claim: String,
    pub strip_token: bool,
}

/// Where a provider's verification keys come from.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyMaterial {
    /// HS* shared secret.
    Secret(Vec<u8>),
    /// A PEM public key (RSA, EC or Ed25519).
    PublicKeyPem(Vec<u8>),
    /// A JWK set (JSON), keys indexed by `kid`.
    Jwks(String),
    /// A JWK set fetched from this URL every `refresh`.
    JwksUrl { url: http::Uri, refresh: Duration },
}

/// Where a token is looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Bearer <token>` in this header.
    Header(HeaderName),
    Cookie(String),
    Query(String),
}

/// API keys: only their SHA-256 is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeysSpec {
    pub header: HeaderName,
    pub keys: Vec<ApiKeySpec>,
}

/// One consumer's key.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeySpec {
    pub consumer: String,
    pub sha256: [u8; 32],
    pub tier: Option<String>,
}

/// A route's authentication and authorization requirements.
#[derive(Debug, Clone)]
pub struct RouteAuthSpec {
    /// Any one of these authenticates the request.
    pub methods: Vec<AuthMethod>,
    pub require_roles: Vec<String>,
    pub require_scopes: Vec<String>,
}

/// One way to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// Index into `AuthSpec::jwt_providers`.
    Jwt(usize),
    ApiKey,
}

/// Rate-limit policies and where their state lives.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitSpec {
    pub store: StoreSpec,
    /// `rate_limits.redis`: the shared store (`store: redis`) and the purge channel's carrier.
    pub redis: Option<RedisSpec>,
    /// Bound of the local store; least recently used keys go first.
    pub max_keys: usize,
    pub policies: Vec<PolicySpec>,
    /// Calendar quotas, counted in Redis.
    pub quotas: Vec<QuotaSpec>,
}

/// A calendar quota: at most `limit` requests per day or month of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSpec {
    pub name: String,
    pub per: QuotaPeriod,
    pub limit: u64,
    pub key: Vec<KeyPart>,
    /// Tier -> limit.
    pub tiers: Vec<(String, u64)>,
    /// IANA name (`Europe/Paris`) or `UTC`: periods end at midnight there.
    pub time_zone: String,
}

/// The calendar period a quota counts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaPeriod {
    Day,
    Month,
}

/// Where rate-limit state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreSpec {
    /// In this process.
    Local,
    /// In Redis (`RateLimitSpec::redis`), shared by every gateway instance.
    Redis,
}

impl Default for RateLimitSpec {
    fn default() -> Self {
        RateLimitSpec {
            store: StoreSpec::Local,
            redis: None,
            max_keys: 1_000_000,
            policies: Vec::new(),
            quotas: Vec::new(),
        }
    }
}

/// How to reach Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSpec {
    pub topology: RedisTopology,
    /// AUTH user (Redis 6 ACLs); `None` with a password is the `default` user.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// TLS to Redis (and to the Sentinels): `None` is plain TCP.
    pub tls: Option<RedisTls>,
    /// Per call.
    pub timeout: Duration,
    /// What requests get while Redis is unreachable: true = allowed, false = 503.
    pub allow_on_error: bool,
}

/// How the gateway verifies Redis's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTls {
    /// PEM roots to trust instead of the system's (`ca_file`).
    pub ca_pem: Option<Vec<u8>>,
}

/// One server, a master watched by Sentinels, or a Cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// `redis://HOST:PORT/DB`.
    Server { url: String },
    /// The master Sentinels name `master_name`, found again after a failover.
    Sentinel {
        master_name: String,
        /// Sentinels as `host:port`.
        addresses: Vec<String>,
        db: i64,
    },
    /// Seed nodes as `host:port`; the client learns the slots and follows MOVED/ASK.
    Cluster { addresses: Vec<String> },
}

/// A credential that never shows in `Debug` output (logs, `check`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One named policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    pub name: String,
    pub algorithm: crate::ratelimit::algorithm::Algorithm,
    /// The parts of the key, in order (one part, or a composite).
    pub key: Vec<KeyPart>,
    pub limit: u64,
    pub window: Duration,
    /// Bucket capacity (token/leaky buckets; default: the effective limit).
    pub burst: Option<u64>,
    /// Tier -> limit.
    pub tiers: Vec<(String, u64)>,
    /// Count and report, never reject.
    pub shadow: bool,
    /// Local-first in a shared store: decided here, reconciled with Redis every this long
    /// (`None`: one Redis round trip per decision).
    pub sync_interval: Option<Duration>,
}

/// One component of a rate-limit key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    Global,
    /// IPv4 address, or the /64 of an IPv6 address.
    ClientIp,
    /// JWT subject or API-key consumer; the client IP when anonymous.
    Consumer,
    Route,
    Header(HeaderName),
    Claim(String),
}
