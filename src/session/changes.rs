//! [`Changes`]: a request's own edits to its session, replayable on top of the
//! data a concurrent request saved.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::error::SessionError;
use crate::record::{Data, USER_KEY, wipe};

/// This request's own edits, replayable on top of a fresher copy of the data.
#[derive(Default)]
pub(crate) struct Changes {
    pub(super) cleared: bool,
    pub(super) entries: BTreeMap<String, Change>,
}

/// A function of a key's current value (`None`: absent) to its new one (`None`:
/// removed), as [`Session::update`](crate::Session::update) was given it.
pub(super) type Updater =
    Arc<dyn Fn(Option<&Value>) -> Result<Option<Value>, SessionError> + Send + Sync>;

/// What this request did to one key.
pub(super) enum Change {
    Set(Value),
    Removed,
    /// Read-modify-write: run again on the value a concurrent writer left.
    Update(Updater),
    /// Read-modify-write that may find the value no longer fit for it: then
    /// this request's write fails ([`Lost`]). A device-binding challenge taken
    /// by two requests at once is taken by one.
    #[cfg_attr(not(feature = "device-binding"), allow(dead_code))]
    Guarded(Guard),
}

/// A function of a key's current value to its new one, or [`Lost`] when the
/// current value no longer allows the change.
pub(super) type Guard = Arc<dyn Fn(Option<&Value>) -> Result<Value, Lost> + Send + Sync>;

/// A change made over a value that a concurrent request has changed since
/// (see [`Change::Expect`]).
#[derive(Debug)]
pub(crate) struct Lost;

impl Drop for Change {
    fn drop(&mut self) {
        if let Change::Set(value) = self {
            wipe(value);
        }
    }
}

impl Changes {
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        !self.cleared && self.entries.is_empty()
    }

    /// How this request changed the session's user: `Some(None)` when it cleared
    /// it, `None` when it left it alone.
    pub(crate) fn user(&self) -> Option<Option<&str>> {
        match self.entries.get(USER_KEY)? {
            Change::Set(value) => Some(value.as_str()),
            // The user key is reserved: `update` never writes it, nor does
            // device binding.
            Change::Removed | Change::Update(_) | Change::Guarded(_) => Some(None),
        }
    }

    /// Applies these edits to `data` as another request left it: values set and
    /// removed as they were, updates run again on the value found.
    ///
    /// # Errors
    ///
    /// [`Lost`] when a guarded change no longer fits the value another request
    /// left; `data` is then partly edited and must be dropped.
    pub(crate) fn apply(&self, data: &mut Data) -> Result<(), Lost> {
        if self.cleared {
            data.retain_reserved();
        }
        for (key, change) in &self.entries {
            let new = match change {
                Change::Set(value) => Some(value.clone()),
                Change::Guarded(guard) => Some(guard(data.get(key))?),
                Change::Removed => None,
                Change::Update(update) => match update(data.get(key)) {
                    Ok(new) => new,
                    Err(err) => {
                        // Another request stored something this update cannot
                        // read: its value stands.
                        tracing::warn!(target: "tower_sealed_sessions", %err, "a session update was not applied to the value a concurrent request stored");
                        continue;
                    }
                },
            };
            let replaced = match new {
                Some(value) => data.insert(key.clone(), value),
                None => data.remove(key),
            };
            if let Some(mut old) = replaced {
                wipe(&mut old);
            }
        }
        Ok(())
    }
}
