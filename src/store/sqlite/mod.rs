//! SQLite: [`SqliteStore`] (feature `sqlite`) and its settings,
//! [`SqliteSettings`].

mod settings;

pub use settings::SqliteSettings;

#[cfg(feature = "sqlite")]
mod store;
#[cfg(feature = "sqlite")]
mod tables;

#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
