//! What several gateway instances share through Redis: the link to Redis (server, Sentinel or
//! Cluster) and the purge channel that carries cache purges to every instance.

pub mod link;
pub mod purge;
