//! The compiled, immutable snapshot the request path reads: routes, pools, settings.
//! Built once from a [`Model`]; a reload builds a new one and swaps it in.

use crate::auth::Authenticator;
use crate::cache::policy::RoutePolicy;
use crate::cache::Cache;
use crate::config::{Model, RouteSpec, RouteTarget, UpstreamSpec};
use crate::fleet::purge::PurgeBus;
use crate::observability::access_log::AccessLog;
use crate::observability::metrics::{ArmMetrics, RouteMetrics};
use crate::routing::split::SplitPlan;
use crate::routing::Router;
use crate::upstream::Pool;
use ipnet::IpNet;
use std::sync::Arc;

/// A route with everything the request path needs precomputed.
pub struct Route {
    pub spec: RouteSpec,
    pub metrics: RouteMetrics,
    /// Set when the route caches responses.
    pub cache: Option<RoutePolicy>,
    /// Set when the route splits its traffic across pools.
    pub split: Option<SplitPlan>,
    /// One per arm of the split, in its order.
    pub arm_metrics: Box<[ArmMetrics]>,
    /// Set when the route aggregates several backends' answers.
    pub aggregate: Option<crate::aggregate::Plan>,
}

impl Route {
    fn new(spec: &RouteSpec, upstreams: &[UpstreamSpec]) -> Self {
        let pool_name = |pool: usize| upstreams.get(pool).map_or("", |u| u.name.as_str());
        let split = match &spec.target {
            RouteTarget::Split(split) => Some(SplitPlan::new(split, pool_name)),
            RouteTarget::Upstream(_) | RouteTarget::Aggregate(_) => None,
        };
        let aggregate = match &spec.target {
            RouteTarget::Aggregate(aggregate) => {
                Some(crate::aggregate::Plan::new(&spec.name, aggregate))
            }
            _ => None,
        };
        let arm_metrics = split.as_ref().map_or_else(Box::default, |plan| {
            (0..plan.len())
                .map(|arm| ArmMetrics::new(&spec.name, plan.arm_name(arm)))
                .collect()
        });
        let cache = spec.cache.as_ref().map(RoutePolicy::new);
        Route {
            cache,
            spec: spec.clone(),
            metrics: RouteMetrics::new(&spec.name, spec.rate_limits.len()),
            split,
            arm_metrics,
            aggregate,
        }
    }
}

/// The snapshot of one loaded configuration.
pub struct Snapshot {
    pub model: Model,
    pub router: Router,
    pub routes: Vec<Route>,
    pub pools: Vec<Arc<Pool>>,
    /// Metrics for requests that matched no route.
    pub unmatched: RouteMetrics,
    pub keepalive_secs: Option<u64>,
    /// Longest wait between two reads of a request body.
    pub body_read_timeout: std::time::Duration,
    pub paths: crate::config::PathRules,
    pub max_request_header_size: usize,
    pub trusted_proxies: Vec<IpNet>,
    pub access_log: Arc<AccessLog>,
    pub auth: Arc<Authenticator>,
    pub limiter: Arc<crate::ratelimit::Limiter>,
    /// The shared response cache, when any route caches.
    pub cache: Option<Cache>,
    /// Spans and trace context (`None`: tracing is off).
    pub tracer: Option<Arc<crate::observability::tracing::Tracer>>,
    /// This instance's end of `cache.purge_channel` (`None`: purges stay local).
    pub purge_bus: Option<Arc<PurgeBus>>,
}

/// Why a snapshot could not be built from a valid model.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot open the access log: {0}")]
    AccessLog(#[from] std::io::Error),
    #[error(transparent)]
    Auth(#[from] crate::auth::jwt::BuildError),
    #[error("cannot start the trace exporter thread: {0}")]
    Tracing(std::io::Error),
    #[error("cannot start the purge channel's thread: {0}")]
    PurgeChannel(std::io::Error),
}

/// A snapshot built to replace a running one, with what must be readied before it serves.
pub struct Successor {
    pub snapshot: Snapshot,
    /// Pools built anew (new or changed): their never-probed backends need a first probe.
    pub new_pools: Vec<Arc<Pool>>,
    /// Remote key sets of a changed `auth` section: fetched once before the swap.
    pub new_key_sets: Vec<Arc<crate::auth::jwks::RemoteJwks>>,
}

impl Snapshot {
    /// Compiles `model` (opens the access log, parses authentication keys).
    pub fn build(model: Model) -> Result<Self, BuildError> {
        Self::build_after(model, None).map(|successor| successor.snapshot)
    }

    /// Compiles `model` to replace `previous` (a reload): unchanged pools, authentication,
    /// rate limiter and access log are shared with it, so their live state carries on; a changed
    /// pool keeps the health of the backends it still has.
    pub fn build_after(model: Model, previous: Option<&Snapshot>) -> Result<Successor, BuildError> {
        let unchanged = |same: &dyn Fn(&Model) -> bool| previous.filter(|p| same(&p.model));
        let access_log = match unchanged(&|m| m.access_log == model.access_log) {
            Some(previous) => Arc::clone(&previous.access_log),
            None => Arc::new(AccessLog::open(&model.access_log)?),
        };
        let mut new_key_sets = Vec::new();
        let auth = match unchanged(&|m| m.auth == model.auth) {
            Some(previous) => Arc::clone(&previous.auth),
            None => {
                let auth = Authenticator::new(&model.auth)?;
                new_key_sets = auth.remote_key_sets();
                Arc::new(auth)
            }
        };
        let limiter = match unchanged(&|m| m.rate_limits == model.rate_limits) {
            Some(previous) => Arc::clone(&previous.limiter),
            None => Arc::new(crate::ratelimit::Limiter::new(&model.rate_limits)),
        };
        let tracer = match (&model.tracing, unchanged(&|m| m.tracing == model.tracing)) {
            (None, _) => None,
            (Some(_), Some(previous)) => previous.tracer.clone(),
            (Some(spec), None) => Some(Arc::new(
                crate::observability::tracing::Tracer::new(spec).map_err(BuildError::Tracing)?,
            )),
        };
        let cache = model.cache.as_ref().map(Cache::shared);
        let purge_bus = purge_bus_after(&model, previous, cache.as_ref())?;
        let (pools, new_pools) = pools_after(&model, previous);
        let routes = model
            .routes
            .iter()
            .map(|route| Route::new(route, &model.upstreams))
            .collect();
        let keepalive = model.server.keepalive_timeout;
        if !model.routes.iter().any(|route| route.cache.is_some()) {
            // No route caches any more: give the shared store's memory back.
            if let Some(cache) = previous.and_then(|p| p.cache.as_ref()) {
                cache.store().purge_prefix("");
            }
        }
        let snapshot = Snapshot {
            router: Router::new(&model.routes),
            routes,
            pools,
            unmatched: RouteMetrics::new("unmatched", 0),
            keepalive_secs: (!keepalive.is_zero()).then(|| keepalive.as_secs().max(1)),
            body_read_timeout: model.server.body_read_timeout,
            paths: model.server.paths,
            max_request_header_size: model.server.max_request_header_size,
            trusted_proxies: model.server.trusted_proxies.clone(),
            access_log,
            auth,
            limiter,
            cache,
            tracer,
            purge_bus,
            model,
        };
        Ok(Successor {
            snapshot,
            new_pools,
            new_key_sets,
        })
    }
}

/// The purge channel's follower: the previous one while its Redis and channel are unchanged
/// (its cursor carries on), else a new one.
fn purge_bus_after(
    model: &Model,
    previous: Option<&Snapshot>,
    cache: Option<&Cache>,
) -> Result<Option<Arc<PurgeBus>>, BuildError> {
    let channel = |m: &Model| m.cache.as_ref().and_then(|c| c.purge_channel.clone());
    let (Some(name), Some(redis)) = (channel(model), model.rate_limits.redis.as_ref()) else {
        return Ok(None);
    };
    if let Some(previous) = previous.filter(|p| {
        channel(&p.model).as_ref() == Some(&name)
            && p.model.rate_limits.redis.as_ref() == Some(redis)
    }) {
        return Ok(previous.purge_bus.clone());
    }
    let Some(cache) = cache else {
        return Ok(None);
    };
    PurgeBus::start(redis, &name, cache.store())
        .map(|bus| Some(Arc::new(bus)))
        .map_err(BuildError::PurgeChannel)
}

/// The model's pools: an unchanged pool is the previous one; a new or changed one is built anew
/// (keeping the health of the backends it still has) and listed second.
fn pools_after(model: &Model, previous: Option<&Snapshot>) -> (Vec<Arc<Pool>>, Vec<Arc<Pool>>) {
    let mut new_pools = Vec::new();
    let pools = model
        .upstreams
        .iter()
        .map(|spec| {
            let old = previous.and_then(|p| {
                let index = p.model.upstreams.iter().position(|u| u.name == spec.name)?;
                Some((&p.model.upstreams[index], &p.pools[index]))
            });
            match old {
                Some((old_spec, old_pool)) if old_spec == spec => Arc::clone(old_pool),
                _ => {
                    let pool = Pool::new(spec);
                    if let Some((_, old_pool)) = old {
                        pool.inherit_health(old_pool);
                    }
                    let pool = Arc::new(pool);
                    new_pools.push(Arc::clone(&pool));
                    pool
                }
            }
        })
        .collect();
    (pools, new_pools)
}
