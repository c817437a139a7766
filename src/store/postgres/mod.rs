//! PostgreSQL: [`PostgresStore`] (feature `postgres`) and its settings,
//! [`PostgresSettings`].

mod settings;

pub use settings::PostgresSettings;

#[cfg(feature = "postgres")]
mod notify;
#[cfg(feature = "postgres")]
mod store;
#[cfg(feature = "postgres")]
mod tables;

#[cfg(feature = "postgres")]
pub use store::PostgresStore;
