//! The compiled, immutable snapshot the request path reads: routes, pools, settings.
//! Built once from a [`Model`]; a reload builds a new one and swaps it in.

use crate::auth::Authenticator;
use crate::cache::policy::RoutePolicy;
use crate::cache::Cache;
use crate::config::{Model, RouteSpec, RouteTarget};
use crate::observability::access_log::AccessLog;
use crate::observability::metrics::RouteMetrics;
use crate::routing::Router;
use crate::upstream::selection::smooth_sequence;
use crate::upstream::Pool;
use ipnet::IpNet;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// A route with everything the request path needs precomputed.
pub struct Route {
    pub spec: RouteSpec,
    pub metrics: RouteMetrics,
    /// Set when the route caches responses.
    pub cache: Option<RoutePolicy>,
    split: Option<SplitPlan>,
}

/// A canary split as a smooth weighted sequence of pool indices.
struct SplitPlan {
    sequence: Vec<usize>,
    next: AtomicUsize,
}

impl Route {
    /// The pool index this request goes to (a split advances its weighted sequence).
    pub fn choose_pool(&self) -> usize {
        match (&self.spec.target, &self.split) {
            (RouteTarget::Upstream(pool), _) => *pool,
            (RouteTarget::Split(_), Some(plan)) => {
                plan.sequence[plan.next.fetch_add(1, Relaxed) % plan.sequence.len()]
            }
            (RouteTarget::Split(branches), None) => branches.first().map_or(0, |b| b.upstream),
        }
    }
}

/// The snapshot of one loaded configuration.
pub struct Runtime {
    pub model: Model,
    pub router: Router,
    pub routes: Vec<Route>,
    pub pools: Vec<Arc<Pool>>,
    /// Metrics for requests that matched no route.
    pub unmatched: RouteMetrics,
    pub keepalive_secs: Option<u64>,
    pub max_request_header_size: usize,
    pub trusted_proxies: Vec<IpNet>,
    pub access_log: Arc<AccessLog>,
    pub auth: Authenticator,
    pub limiter: crate::ratelimit::Limiter,
    /// The shared response cache, when any route caches.
    pub cache: Option<Cache>,
}

/// Why a snapshot could not be built from a valid model.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot open the access log: {0}")]
    AccessLog(#[from] std::io::Error),
    #[error(transparent)]
    Auth(#[from] crate::auth::jwt::BuildError),
    #[error("rate limits: {0}")]
    RateLimit(String),
}

impl Runtime {
    /// Compiles `model` (opens the access log, parses authentication keys).
    pub fn build(model: Model) -> Result<Self, BuildError> {
        let access_log = Arc::new(AccessLog::open(&model.access_log)?);
        let auth = Authenticator::new(&model.auth)?;
        let limiter =
            crate::ratelimit::Limiter::new(&model.rate_limits).map_err(BuildError::RateLimit)?;
        let pools: Vec<Arc<Pool>> = model
            .upstreams
            .iter()
            .map(|spec| Arc::new(Pool::new(spec)))
            .collect();
        let routes = model
            .routes
            .iter()
            .map(|spec| {
                let split = match &spec.target {
                    RouteTarget::Split(branches) => {
                        let weights: Vec<u32> = branches.iter().map(|b| b.weight).collect();
                        let sequence = smooth_sequence(&weights)
                            .into_iter()
                            .map(|branch| branches[usize::from(branch)].upstream)
                            .collect::<Vec<_>>();
                        (!sequence.is_empty()).then(|| SplitPlan {
                            sequence,
                            next: AtomicUsize::new(0),
                        })
                    }
                    RouteTarget::Upstream(_) => None,
                };
                let cache = spec
                    .cache
                    .as_ref()
                    .zip(model.cache.as_ref())
                    .map(|(route, shared)| RoutePolicy::new(route, shared));
                Route {
                    cache,
                    spec: spec.clone(),
                    metrics: RouteMetrics::new(&spec.name, spec.rate_limits.len()),
                    split,
                }
            })
            .collect();
        let keepalive = model.server.keepalive_timeout;
        Ok(Runtime {
            router: Router::new(&model.routes),
            routes,
            pools,
            unmatched: RouteMetrics::new("unmatched", 0),
            keepalive_secs: (!keepalive.is_zero()).then(|| keepalive.as_secs().max(1)),
            max_request_header_size: model.server.max_request_header_size,
            trusted_proxies: model.server.trusted_proxies.clone(),
            access_log,
            auth,
            limiter,
            cache: model.cache.as_ref().map(Cache::shared),
            model,
        })
    }
}
