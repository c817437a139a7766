//! The audit trail: [`AUDIT_TARGET`], the events written to it, and the
//! [`Fingerprint`] that names a session in them.
//!
//! Audit events go through `tracing`, at `INFO`, under the target
//! `tower_sealed_sessions::audit`; each has an `event` field:
//!
//! | event | when | fields |
//! | --- | --- | --- |
//! | `created` | a new session was stored | `fingerprint`, `user` when it has one |
//! | `cycled` | a session moved to a new id (login, or a key rotation) | `fingerprint`, `previous`, `user` when it has one |
//! | `destroyed` | a session was ended by logout | `fingerprint`, `user` when known |
//! | `expired` | a request found its session ended | `fingerprint`, `reason`: `idle`, `lifespan` or `missing` |
//! | `revoked` | [`UserSessions`](crate::UserSessions) ended it | `fingerprint`, `user` |
//! | `limit_evicted` | a login pushed its user past the per-user limit | `fingerprint`, `user` |
//! | `rejected` | a token or record was refused | `reason`, and `fingerprint` or `count` |
//!
//! Every event also has an `outcome`: `success`, or `failure` for `expired` and
//! `rejected` (the Elastic Common Schema's `event.outcome`). Events name sessions
//! by [`Fingerprint`], and users by [`Fingerprint::of_user`] (a hash of the keyed
//! user tag), never by id, cookie or user id.
//! `missing` is how an idle expiry shows in Redis, which drops the record itself.
//!
//! ```
//! use tower_sealed_sessions::audit::AUDIT_TARGET;
//!
//! // For example with tracing-subscriber: `EnvFilter::new(format!("{AUDIT_TARGET}=info"))`.
//! assert_eq!(AUDIT_TARGET, "tower_sealed_sessions::audit");
//! ```

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::record::StoreKey;
use crate::store::UserTag;

/// The tracing target of audit events.
///
/// Every event is at `INFO` with an `event` field: `created`, `cycled`,
/// `destroyed`, `expired` (with `reason`: `idle`, `lifespan`, or `missing` when the
/// record was already gone, which in Redis is how an idle expiry shows), `revoked`,
/// `limit_evicted` and `rejected` (with `reason`); with device binding,
/// `device_bound`, `device_refreshed`, `device_proof_failed` and
/// `device_unbound_refused` (see [`device_binding`](crate::device_binding)). Events name sessions by their
/// [`Fingerprint`], never by id, cookie or user id. Route them with a filter such as
/// `tower_sealed_sessions::audit=info`.
pub const AUDIT_TARGET: &str = "tower_sealed_sessions::audit";

/// A session's public name: 16 URL-safe characters that are safe to show to its
/// user, write to logs and send back to revoke it.
///
/// It is a hash of the session's [`StoreKey`], itself an HMAC of the session id, so
/// it gives away neither the id nor the cookie. A session gets a new fingerprint
/// when its id is cycled (at login).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 12]);

impl Fingerprint {
    /// The fingerprint of the session stored under `key`.
    pub fn of(key: &StoreKey) -> Self {
        let digest = Sha256::new()
            .chain_update(b"tower-sealed-sessions fingerprint v1")
            .chain_update(key.as_bytes())
            .finalize();
        let mut out = [0u8; 12];
        out.copy_from_slice(&digest[..12]);
        Fingerprint(out)
    }
}

impl Fingerprint {
    /// The public name of a user in the audit trail: a hash of the user's
    /// [`UserTag`] (itself a keyed HMAC of the user id), so events of one user
    /// can be followed without the user id being written anywhere. The tag is
    /// made with the key that sealed the session, so a user's fingerprint
    /// changes when the primary key is rotated.
    pub fn of_user(tag: &UserTag) -> Self {
        let digest = Sha256::new()
            .chain_update(b"tower-sealed-sessions user fingerprint v1")
            .chain_update(tag.as_bytes())
            .finalize();
        let mut out = [0u8; 12];
        out.copy_from_slice(&digest[..12]);
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 12];
        match URL_SAFE_NO_PAD.decode_slice(s.as_bytes(), &mut out) {
            Ok(12) if s.len() == 16 => Ok(Fingerprint(out)),
            _ => Err(FingerprintError(s.chars().take(40).collect())),
        }
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A string that is not a [`Fingerprint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintError(String);

impl fmt::Display for FingerprintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a session fingerprint: 16 characters of URL-safe base64",
            self.0
        )
    }
}

impl std::error::Error for FingerprintError {}

/// Emits an audit event about the session stored under `key`.
/// `user`, when known, appears as `user`: the [`Fingerprint::of_user`] of its
/// tag, never the user id.
pub(crate) fn audit(key: &StoreKey, event: &'static str, user: Option<&UserTag>) {
    crate::metrics::event(event);
    let user = user.map(Fingerprint::of_user);
    tracing::info!(
        target: AUDIT_TARGET,
        event,
        outcome = "success",
        fingerprint = %Fingerprint::of(key),
        user = user.as_ref().map(tracing::field::display),
    );
}

/// Emits a device-binding audit event (`device_bound`, `device_refreshed`,
/// `device_proof_failed`, `device_unbound_refused`) about the session stored
/// under `key`, when the request had one.
pub(crate) fn audit_device(
    event: &'static str,
    outcome: &'static str,
    key: Option<&StoreKey>,
    reason: Option<&str>,
) {
    crate::metrics::event(event);
    tracing::info!(
        target: AUDIT_TARGET,
        event,
        outcome,
        reason,
        fingerprint = key.map(|k| tracing::field::display(Fingerprint::of(k))),
    );
}

/// Emits an `expired` audit event with its reason.
pub(crate) fn audit_expired(key: &StoreKey, reason: &'static str) {
    crate::metrics::expired(reason);
    tracing::info!(target: AUDIT_TARGET, event = "expired", outcome = "failure", reason, fingerprint = %Fingerprint::of(key));
}

/// Emits a `rejected` event for a record the store could not decode or that did
/// not open with its cookie, and a warning for the operator.
pub(crate) fn audit_rejected_record(key: &StoreKey, what: &'static str, reason: &dyn fmt::Display) {
    crate::metrics::rejected(match what {
        "corrupt" => "corrupt_record",
        _ => "refused_record",
    });
    let fingerprint = Fingerprint::of(key);
    tracing::warn!(target: "tower_sealed_sessions", %reason, %fingerprint, "session record {what}");
    tracing::info!(target: AUDIT_TARGET, event = "rejected", outcome = "failure", %fingerprint, %reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_print_and_parse_back() {
        let fp = Fingerprint::of(&StoreKey::from_bytes([7; 32]));
        let text = fp.to_string();
        assert_eq!(text.len(), 16);
        assert_eq!(text.parse::<Fingerprint>().unwrap(), fp);
        assert_ne!(fp, Fingerprint::of(&StoreKey::from_bytes([8; 32])));
        for bad in ["", "short", "AAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAA+", "é"] {
            let err = bad.parse::<Fingerprint>().unwrap_err();
            assert!(err.to_string().contains("is not a session fingerprint"));
        }
    }
}
