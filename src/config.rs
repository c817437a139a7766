//! Configuration errors.
//!
//! Every invalid setting is reported as a [`ConfigError`] that names the field and
//! says what is wrong with it, so an operator can mend the file without reading code.
//!
//! ```
//! use std::time::Duration;
//! use tower_sealed_sessions::MemoryStore;
//!
//! let err = MemoryStore::new().cleanup_task(Duration::from_secs(1)).err().unwrap();
//! assert_eq!(err.field(), "cleanup_interval");
//! ```

use std::fmt;

/// A setting was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: String,
}

impl ConfigError {
    pub(crate) fn new(field: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }

    /// The configuration field at fault, as it is spelt in a configuration file.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid session setting `{}`: {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}
