//! The crate's public errors: [`ConfigError`], [`KeyError`], [`StoreError`] and
//! [`SessionError`].
//!
//! Each says what went wrong and how to mend it, and keeps its cause behind
//! [`source`](StdError::source).

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A setting was refused.
///
/// ```
/// use tower_sealed_sessions::{Keys, MemoryStore, SameSite, SessionLayer};
///
/// let layer = SessionLayer::new(MemoryStore::default(), Keys::generate())
///     .with_same_site(SameSite::None)
///     .with_secure(false);
/// let err = layer.validate().unwrap_err();
/// assert_eq!(err.field(), "cookie.same_site");
/// // Built in code: the message names the method too.
/// assert!(err.to_string().starts_with(
///     "invalid session setting `cookie.same_site` (`with_same_site`): `none` requires"
/// ));
/// ```
#[derive(Clone)]
pub struct ConfigError {
    field: String,
    /// For a layer built in code: the builder method that sets `field`, which
    /// the message names instead.
    method: Option<String>,
    reason: String,
    source: Option<Arc<dyn StdError + Send + Sync>>,
    /// The other settings at fault, found in the same check.
    more: Vec<ConfigError>,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            method: None,
            reason: reason.into(),
            source: None,
            more: Vec::new(),
        }
    }

    /// Every error of `errors` in one, the first leading; `Ok` when there are
    /// none.
    pub(crate) fn all(errors: Vec<ConfigError>) -> Result<(), ConfigError> {
        let mut errors = errors.into_iter().flat_map(ConfigError::into_each);
        let Some(mut first) = errors.next() else {
            return Ok(());
        };
        first.more = errors.collect();
        Err(first)
    }

    /// This error and the others found with it, one by one.
    pub(crate) fn into_each(mut self) -> Vec<ConfigError> {
        let more = std::mem::take(&mut self.more);
        std::iter::once(self).chain(more).collect()
    }

    /// Every setting at fault that one check found, this one first: a file
    /// with four mistakes reports four.
    pub fn errors(&self) -> impl Iterator<Item = &ConfigError> {
        std::iter::once(self).chain(self.more.iter())
    }

    pub(crate) fn with_source(mut self, source: Arc<dyn StdError + Send + Sync>) -> Self {
        self.source = Some(source);
        self
    }

    pub(crate) fn key(field: String, err: KeyError) -> Self {
        ConfigError {
            field,
            method: None,
            reason: err.to_string(),
            source: Some(Arc::new(err)),
            more: Vec::new(),
        }
    }

    /// The setting at fault, as a configuration file spells it (for example
    /// `cookie.same_site` or `previous_secrets[1]`), whether the layer came from
    /// a file or from code. The message of an error about a layer built in code
    /// also names the builder method (`` `cookie.same_site` (`with_same_site`) ``).
    pub fn field(&self) -> &str {
        &self.field
    }

    pub(crate) fn reason(&self) -> &str {
        &self.reason
    }

    /// This error and those found with it, each message naming the builder
    /// method `method` gives for its field (if any) instead of the field.
    pub(crate) fn in_code(mut self, method: impl Fn(&str) -> Option<String>) -> Self {
        self.method = method(&self.field);
        for error in &mut self.more {
            error.method = method(&error.field);
        }
        self
    }

    /// This error, about the setting `rename` makes of its field.
    pub(crate) fn renamed(mut self, rename: impl FnOnce(&str) -> String) -> Self {
        self.field = rename(&self.field);
        self
    }
}

impl ConfigError {
    /// The setting as the message names it: the field, and for a layer built in
    /// code the method that sets it.
    fn shown(&self) -> Shown<'_> {
        Shown(self)
    }
}

struct Shown<'a>(&'a ConfigError);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.method {
            Some(method) => write!(f, "`{}` (`{method}`)", self.0.field),
            None => write!(f, "`{}`", self.0.field),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.more.is_empty() {
            return write!(
                f,
                "invalid session setting {}: {}",
                self.shown(),
                self.reason
            );
        }
        write!(f, "{} invalid session settings:", self.more.len() + 1)?;
        for error in self.errors() {
            write!(f, "\n  - {}: {}", error.shown(), error.reason)?;
        }
        Ok(())
    }
}

impl StdError for ConfigError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Why a master secret was refused or could not be loaded.
#[non_exhaustive]
pub enum KeyError {
    /// The secret is shorter than the minimum.
    TooShort {
        /// The length given, in bytes.
        len: usize,
        /// The minimum length, in bytes.
        min: usize,
    },
    /// The secret is obviously not random (a repeated pattern, or very few
    /// distinct bytes).
    LowEntropy,
    /// The value is not base64.
    NotBase64(base64::DecodeError),
    /// The environment variable is not set.
    EnvNotSet(String),
    /// A secret reference names an unknown scheme (for example `File:` for `file:`).
    UnknownReference(String),
    /// A key file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// An existing `generate:` key file is not trusted: another user could
    /// have written it or could replace it (see
    /// [`Secret::find_or_create`](crate::Secret::find_or_create)).
    Untrusted {
        /// The file.
        path: PathBuf,
        /// Why it is not trusted, and how to mend it.
        reason: String,
    },
    /// A loaded secret was refused; `origin` says where it came from.
    Context {
        /// Where the secret came from, for example `file /run/secrets/session`.
        origin: String,
        /// Why it was refused.
        source: Box<KeyError>,
    },
}

impl KeyError {
    pub(crate) fn context(self, origin: String) -> Self {
        KeyError::Context {
            origin,
            source: Box::new(self),
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const FIX: &str =
            "generate one with `cargo run --example keygen` or `openssl rand -base64 48`";
        match self {
            KeyError::TooShort { len, min } => write!(
                f,
                "session secret is {len} bytes long, at least {min} random bytes are needed; {FIX}"
            ),
            KeyError::LowEntropy => write!(
                f,
                "session secret is not random (it repeats a short pattern or uses fewer than \
                 8 distinct bytes); {FIX}"
            ),
            KeyError::NotBase64(err) => write!(f, "session secret is not valid base64: {err}"),
            KeyError::EnvNotSet(name) => write!(
                f,
                "environment variable {name} holding the session secret is not set"
            ),
            KeyError::UnknownReference(scheme) => write!(
                f,
                "`{scheme}:` is not a secret reference: use env:NAME, file:/path, \
                 generate:/path or base64:VALUE (lower case)"
            ),
            KeyError::Io { path, source } => {
                write!(f, "session key file {}: {source}", path.display())
            }
            KeyError::Untrusted { path, reason } => write!(
                f,
                "generate:{}: refused as the session key: {reason}",
                path.display()
            ),
            KeyError::Context { origin, source } => write!(f, "{source} (from {origin})"),
        }
    }
}

impl StdError for KeyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            KeyError::NotBase64(err) => Some(err),
            KeyError::Io { source, .. } => Some(source),
            KeyError::Context { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// A store operation failed.
///
/// The layer turns it into 503 Service Unavailable (or gRPC `UNAVAILABLE`) and a
/// traced error; the cause stays available through [`source`](StdError::source).
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed or could not be reached.
    Backend(Box<dyn StdError + Send + Sync>),
    /// The backend did not answer in time.
    Timeout(Duration),
    /// A stored value could not be decoded by the store.
    Corrupt(String),
    /// A compare-and-set update lost to concurrent writers on every attempt, or
    /// (with no attempt made) waited until the write deadline for its turn behind
    /// this process's other writes of the session, or found too many of them
    /// waiting.
    Contended {
        /// How many attempts were made: 0 when it never had its turn.
        attempts: u32,
    },
}

impl StoreError {
    /// Wraps a backend error.
    pub fn backend(err: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        StoreError::Backend(err.into())
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Backend(err) => write!(f, "session store failed: {err}"),
            StoreError::Timeout(after) => {
                write!(f, "session store did not answer within {after:?}")
            }
            StoreError::Corrupt(what) => write!(f, "session store holds a corrupt value: {what}"),
            StoreError::Contended { attempts: 0 } => f.write_str(
                "session update gave up waiting behind this process's other writes of the session",
            ),
            StoreError::Contended { attempts } => write!(
                f,
                "session update lost to concurrent writers {attempts} times in a row"
            ),
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            StoreError::Backend(err) => Some(err.as_ref()),
            _ => None,
        }
    }
}

/// A session could not be read or written: a value could not be converted, or the
/// session is not loaded.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionError {
    /// The value given to [`Session::insert`](crate::Session::insert) cannot be
    /// represented as JSON.
    Serialize {
        /// The key being written.
        key: String,
        /// Why serde refused it.
        source: serde_json::Error,
    },
    /// The value stored under a key is not of the type asked for.
    Deserialize {
        /// The key being read.
        key: String,
        /// Why serde refused it.
        source: serde_json::Error,
    },
    /// Keys starting with NUL belong to the layer (the user id lives under one).
    ReservedKey {
        /// The key refused.
        key: String,
    },
    /// The session is loaded on first use, and this request's has not been: call
    /// [`Session::load`](crate::Session::load) first (the axum extractor does).
    NotLoaded,
    /// [`Session::load`](crate::Session::load) could not read the session's record:
    /// the store failed. Answer 503 (or gRPC `UNAVAILABLE`).
    Unavailable {
        /// What the store said.
        reason: String,
    },
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Serialize { key, source } => {
                write!(f, "cannot store session value `{key}`: {source}")
            }
            SessionError::Deserialize { key, source } => write!(
                f,
                "session value `{key}` is not of the requested type: {source}"
            ),
            SessionError::ReservedKey { key } => write!(
                f,
                "session key {key:?} is reserved: keys starting with NUL belong to the layer"
            ),
            SessionError::NotLoaded => f.write_str(
                "the session is not loaded: call `Session::load().await` before using it",
            ),
            SessionError::Unavailable { reason } => {
                write!(f, "the session store is unavailable: {reason}")
            }
        }
    }
}

impl StdError for SessionError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            SessionError::Serialize { source, .. } | SessionError::Deserialize { source, .. } => {
                Some(source)
            }
            SessionError::ReservedKey { .. }
            | SessionError::NotLoaded
            | SessionError::Unavailable { .. } => None,
        }
    }
}

/// `Debug` reads as `Display`, the cause included: what
/// `fn main() -> Result<(), Box<dyn Error>>` prints for an error it returns.
impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)?;
        let mut source = StdError::source(self);
        while let Some(cause) = source {
            let text = cause.to_string();
            // A cause whose text the message already holds adds nothing.
            if !self.reason.contains(&text) {
                write!(f, ": {text}")?;
            }
            source = cause.source();
        }
        Ok(())
    }
}

/// `Debug` reads as `Display`, for the same reason as [`ConfigError`]'s.
impl fmt::Debug for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_error_keeps_its_source() {
        let io = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let err = StoreError::backend(io);
        assert_eq!(err.to_string(), "session store failed: refused");
        let source = err.source().expect("source kept");
        assert_eq!(source.to_string(), "refused");
        assert!(source.downcast_ref::<io::Error>().is_some());
    }

    #[test]
    fn key_errors_keep_their_causes_and_context_chains_them() {
        let io = KeyError::Io {
            path: "/run/secrets/key".into(),
            source: io::Error::new(io::ErrorKind::PermissionDenied, "denied"),
        };
        assert_eq!(io.to_string(), "session key file /run/secrets/key: denied");
        let source = io.source().expect("the I/O error is kept");
        assert_eq!(
            source.downcast_ref::<io::Error>().unwrap().kind(),
            io::ErrorKind::PermissionDenied
        );

        let wrapped = KeyError::LowEntropy.context("file /k".into());
        assert!(wrapped.to_string().ends_with("(from file /k)"), "{wrapped}");
        let inner = wrapped.source().expect("the context keeps the error");
        assert!(matches!(
            inner.downcast_ref::<KeyError>(),
            Some(KeyError::LowEntropy)
        ));
        assert!(inner.source().is_none(), "the chain ends there");

        let decode =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, "!").unwrap_err();
        let not_base64 = KeyError::NotBase64(decode);
        assert!(
            not_base64
                .source()
                .unwrap()
                .downcast_ref::<base64::DecodeError>()
                .is_some()
        );
        for plain in [
            KeyError::LowEntropy,
            KeyError::TooShort { len: 1, min: 32 },
            KeyError::EnvNotSet("X".into()),
            KeyError::UnknownReference("my_env".into()),
            KeyError::Untrusted {
                path: "/k".into(),
                reason: "it is a symbolic link".into(),
            },
        ] {
            assert!(plain.source().is_none(), "{plain}");
        }
        assert!(
            KeyError::UnknownReference("my_env".into())
                .to_string()
                .starts_with("`my_env:` is not a secret reference")
        );
        assert!(ConfigError::new("cookie.name", "empty").source().is_none());
    }

    #[test]
    fn a_config_error_keeps_the_key_error_behind_it() {
        let err = ConfigError::key("secret".into(), KeyError::LowEntropy);
        assert_eq!(err.field(), "secret");
        assert!(
            err.to_string()
                .starts_with("invalid session setting `secret`: ")
        );
        let source = err.source().expect("source kept");
        assert!(matches!(
            source.downcast_ref::<KeyError>(),
            Some(KeyError::LowEntropy)
        ));
    }
}
