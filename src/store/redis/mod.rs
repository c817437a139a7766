//! Redis: [`RedisStore`] (feature `redis`) and its settings, [`RedisSettings`].

mod settings;

pub use settings::{
    ClusterSettings, ReconnectSettings, RedisSettings, SentinelSettings, TlsSettings, WaitSettings,
};

#[cfg(feature = "redis")]
mod codec;
#[cfg(feature = "redis")]
mod command;
#[cfg(feature = "redis")]
mod connect;
#[cfg(feature = "redis")]
mod eviction;
#[cfg(feature = "redis")]
mod failover;
#[cfg(feature = "redis")]
mod link;
#[cfg(feature = "redis")]
mod scripts;
#[cfg(feature = "redis")]
mod store;
#[cfg(feature = "redis")]
mod tracking;

#[cfg(feature = "redis")]
pub use store::RedisStore;
