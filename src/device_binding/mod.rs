//! Device-bound sessions ([Device Bound Session Credentials], W3C WebAppSec,
//! First Public Working Draft 2025-08-21): a stolen cookie dies off the device.
//!
//! A browser that supports DBSC keeps a private key in the device's secure
//! hardware. Once a session is bound to that key, the session cookie alone is
//! not enough: every request must also carry a short-lived **bound cookie**,
//! which only a proof of possession of the key renews. Whoever copies the
//! session cookie off the device (infostealer malware, a leaked HAR file, a
//! proxy log) holds a session that the layer no longer honours; the bound
//! cookie they may have copied with it ends within minutes.
//!
//! With [`SessionLayer::with_device_binding`](crate::SessionLayer::with_device_binding)
//! (or `device_binding:` in a configuration file; `device_binding: {}` for the
//! defaults), and the `device-binding` feature:
//!
//! 1. **Offer.** After login, [`Session::bind_device`](crate::Session::bind_device)
//!    (or every [`cycle_id`](crate::Session::cycle_id), with
//!    [`DeviceBinding::with_offer_on_cycle_id`]) makes the response carry
//!    `Secure-Session-Registration: (ES256 RS256);path="...";challenge="..."`.
//!    The challenge is random, kept in the session's sealed record, single use,
//!    and expires after five minutes.
//! 2. **Registration.** The browser posts a `Secure-Session-Response` JWT to the
//!    registration path, which the layer serves itself. It checks `typ`
//!    (`dbsc+jwt`), the algorithm (one offered), the public JWK in the header, the
//!    signature by that key and the challenge (`jti`), stores the public key in
//!    the session's sealed record, and answers with the session instructions
//!    (JSON: the session identifier, refresh URL, scope and the bound cookie's name
//!    and attributes) and the bound cookie.
//! 3. **Refresh.** Without the bound cookie the browser posts
//!    `Sec-Secure-Session-Id` to the refresh path: the layer answers 403 with
//!    `Secure-Session-Challenge: "...";id="..."`, and a valid proof over that
//!    challenge (signed by the stored key) gets a new bound cookie.
//! 4. **Enforcement.** A bound session is a session only on requests that carry
//!    a valid, unexpired bound cookie for it: the bound cookie is sealed with the
//!    layer's keys and names the binding it belongs to, so it opens for no other
//!    session. Without it the handler sees no session: it gets a new, empty one,
//!    as a request without a cookie does ([`Session::is_withheld`](crate::Session::is_withheld)
//!    tells why). The bound session is neither read, saved, slid nor cleared,
//!    and its cookie is left alone, so a browser that holds requests while it
//!    refreshes loses nothing. Only if the handler writes (a login) does the
//!    response start a new session, with a new cookie; a logout clears the
//!    cookie.
//!    Browsers without DBSC never register and keep today's behaviour. A
//!    `Secure-Session-Skipped` header (the browser could not refresh) is logged
//!    with its reason and grants nothing.
//!
//! **The layer must see the endpoints' requests.** axum's `Router::layer` wraps
//! only the routes and the fallback added before it: give the router a fallback
//! before the session layer (or wrap the whole router, routes added later
//! included), or the registration and refresh paths reach axum's 404 instead.
//!
//! **A privilege change unbinds.** [`cycle_id`](crate::Session::cycle_id) and a
//! change of user ([`set_user_id`](crate::Session::set_user_id) with another
//! user, [`clear_user_id`](crate::Session::clear_user_id)) drop the binding,
//! its key and its outstanding challenges, and the response clears the bound
//! cookie: a session bound to an attacker's key and planted in a victim's
//! browser is not the attacker's after the victim logs in.
//! [`bind_device`](crate::Session::bind_device) then offers binding afresh, to
//! the browser that logged in. And a request to either endpoint that proves
//! nothing is no activity of the session's under any plan: it slides and
//! touches nothing and, after a key rotation, is not moved to the primary key
//! (which would hand its sender a new cookie).
//!
//! Audit events (target [`AUDIT_TARGET`](crate::audit::AUDIT_TARGET)):
//! `device_bound` (registration) and `device_refreshed`, once saved;
//! `device_proof_failed` (with `reason`; `not_saved` when a concurrent request
//! took the challenge first); and `device_unbound_refused` for a request
//! refused for a missing bound cookie (with `reason`: `missing`, `expired`,
//! `foreign`, or the browser's `Secure-Session-Skipped` reason).
//!
//! **What it does not protect against**: malware on the device while the bound
//! cookie lives can use the session through the browser, or copy the bound
//! cookie and use it until it expires (minutes, [`DeviceBinding::with_cookie_lifetime`]).
//! And a session is bound only after a registration, so a cookie stolen between
//! login and registration is as good as the user's until then.
//!
//! [Device Bound Session Credentials]: https://w3c.github.io/webappsec-dbsc/

// Without the `device-binding` feature the layer refuses to start with binding
// on, and the endpoints that use the rest of this module are not compiled.
#![cfg_attr(not(feature = "device-binding"), allow(dead_code))]

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::cookie::{self, CookieData};
use crate::keys::Keys;

#[cfg(feature = "device-binding")]
pub(crate) mod proof;
#[cfg(all(feature = "device-binding", feature = "test-util"))]
mod test_device;

#[cfg(all(feature = "device-binding", feature = "test-util"))]
pub use test_device::{TestDevice, refresh_challenge, registration_challenge};

/// Where a session's binding is kept in its sealed record: a reserved key.
pub(crate) const BINDING_KEY: &str = "\u{0}dbsc";

/// How long a challenge may be answered.
pub(crate) const CHALLENGE_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// The most challenges a session keeps outstanding (the browser may answer an
/// older one after a race); the oldest is dropped first.
const MAX_CHALLENGES: usize = 3;

/// A signature algorithm a device key may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256 (what Chromium's software and TPM keys use).
    #[serde(rename = "ES256")]
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048 to 8192-bit keys.
    #[serde(rename = "RS256")]
    Rs256,
}

impl Algorithm {
    /// The JOSE name: `ES256` or `RS256`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Rs256 => "RS256",
        }
    }
}

/// The device-binding settings of a layer; see the [module documentation](self).
///
/// ```
/// use std::time::Duration;
/// use tower_sealed_sessions::device_binding::DeviceBinding;
///
/// let binding = DeviceBinding::new()
///     .with_cookie_lifetime(Duration::from_secs(5 * 60))
///     .with_offer_on_cycle_id(true);
/// assert_eq!(binding.refresh_path(), "/.well-known/sealed-sessions/refresh");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceBinding {
    pub(crate) registration_path: String,
    pub(crate) refresh_path: String,
    pub(crate) cookie_name: Option<String>,
    pub(crate) cookie_lifetime: Duration,
    pub(crate) algorithms: Vec<Algorithm>,
    pub(crate) offer_on_cycle_id: bool,
}

impl Default for DeviceBinding {
    fn default() -> Self {
        DeviceBinding::new()
    }
}

impl DeviceBinding {
    /// The defaults: registration at `/.well-known/sealed-sessions/register`,
    /// refresh at `/.well-known/sealed-sessions/refresh`, the bound cookie named
    /// after the session cookie with `_bound` appended, living 5 minutes, ES256
    /// and RS256, offered only where the application calls
    /// [`Session::bind_device`](crate::Session::bind_device).
    pub fn new() -> Self {
        DeviceBinding {
            registration_path: "/.well-known/sealed-sessions/register".to_owned(),
            refresh_path: "/.well-known/sealed-sessions/refresh".to_owned(),
            cookie_name: None,
            cookie_lifetime: Duration::from_secs(5 * 60),
            algorithms: vec![Algorithm::Es256, Algorithm::Rs256],
            offer_on_cycle_id: false,
        }
    }

    /// The path the layer serves registrations on.
    pub fn with_registration_path(mut self, path: impl Into<String>) -> Self {
        self.registration_path = path.into();
        self
    }

    /// The path the layer serves refreshes on.
    pub fn with_refresh_path(mut self, path: impl Into<String>) -> Self {
        self.refresh_path = path.into();
        self
    }

    /// The bound cookie's name (default: the session cookie's, then `_bound`).
    /// Its other attributes are the session cookie's.
    pub fn with_cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = Some(name.into());
        self
    }

    /// How long a bound cookie is good for (default 5 minutes, at least 10
    /// seconds): how long a copy of it is worth anything, and how often the
    /// browser proves possession of its key.
    pub fn with_cookie_lifetime(mut self, lifetime: Duration) -> Self {
        self.cookie_lifetime = lifetime;
        self
    }

    /// The algorithms device keys may use (default ES256 and RS256).
    pub fn with_algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Offers binding on every [`cycle_id`](crate::Session::cycle_id) (a login),
    /// as if the handler called [`bind_device`](crate::Session::bind_device).
    pub fn with_offer_on_cycle_id(mut self, offer: bool) -> Self {
        self.offer_on_cycle_id = offer;
        self
    }

    /// The registration path.
    pub fn registration_path(&self) -> &str {
        &self.registration_path
    }

    /// The refresh path.
    pub fn refresh_path(&self) -> &str {
        &self.refresh_path
    }

    /// The bound cookie's name for a session cookie called `session_cookie`.
    pub(crate) fn bound_cookie_name(&self, session_cookie: &str) -> String {
        self.cookie_name
            .clone()
            .unwrap_or_else(|| format!("{session_cookie}_bound"))
    }

    /// The `Secure-Session-Registration` value offering `challenge`.
    pub(crate) fn registration_header(&self, challenge: &str) -> String {
        let names: Vec<&str> = self.algorithms.iter().map(|a| a.name()).collect();
        format!(
            "({});path=\"{}\";challenge=\"{challenge}\"",
            names.join(" "),
            self.registration_path
        )
    }
}

/// A session's binding, as its sealed record keeps it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The DBSC session identifier (16 random bytes, base64url), which the bound
    /// cookie names; absent until a registration succeeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    /// The device's public key, once registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<DeviceKey>,
    /// Outstanding challenges, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) challenges: Vec<Challenge>,
}

/// A device's public key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "alg")]
pub(crate) enum DeviceKey {
    /// The uncompressed P-256 point (`04 || x || y`), base64url.
    #[serde(rename = "ES256")]
    Es256 { point: String },
    /// The RSA modulus and exponent, base64url big-endian.
    #[serde(rename = "RS256")]
    Rs256 { n: String, e: String },
}

impl DeviceKey {
    pub(crate) fn algorithm(&self) -> Algorithm {
        match self {
            DeviceKey::Es256 { .. } => Algorithm::Es256,
            DeviceKey::Rs256 { .. } => Algorithm::Rs256,
        }
    }
}

/// An outstanding challenge and when it stops being accepted.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub(crate) value: String,
    /// Unix milliseconds.
    pub(crate) until: u64,
}

impl Entry {
    /// Adds the challenge `value`, valid until `now` + [`CHALLENGE_LIFETIME`],
    /// and drops the expired ones and the oldest beyond [`MAX_CHALLENGES`].
    pub(crate) fn add_challenge(&mut self, value: String, now: Timestamp) {
        self.challenges.retain(|c| c.until > now.unix_millis());
        if self.challenges.iter().any(|c| c.value == value) {
            return;
        }
        if self.challenges.len() >= MAX_CHALLENGES {
            self.challenges.remove(0);
        }
        self.challenges.push(Challenge {
            value,
            until: now.saturating_add(CHALLENGE_LIFETIME).unix_millis(),
        });
    }

    /// The newest outstanding challenge, if it was issued less than `within`
    /// ago: a refresh asked again so soon gets it again, and writes nothing.
    pub(crate) fn recent_challenge(&self, now: Timestamp, within: Duration) -> Option<&str> {
        let newest = self.challenges.last()?;
        let issued = newest
            .until
            .saturating_sub(u64::try_from(CHALLENGE_LIFETIME.as_millis()).unwrap_or(u64::MAX));
        let age = now.unix_millis().saturating_sub(issued);
        (newest.until > now.unix_millis() && u128::from(age) < within.as_millis())
            .then_some(newest.value.as_str())
    }

    /// Takes the outstanding, unexpired challenge `value`: `false` when there is
    /// none (never issued, used already, or expired).
    pub(crate) fn take_challenge(&mut self, value: &str, now: Timestamp) -> bool {
        self.challenges.retain(|c| c.until > now.unix_millis());
        let before = self.challenges.len();
        self.challenges.retain(|c| c.value != value);
        self.challenges.len() < before
    }
}

/// 16 random bytes, base64url without padding: a challenge, or a binding's
/// identifier.
pub(crate) fn random_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// How much longer than its `Max-Age` a bound cookie is honoured: servers
/// whose clocks differ a little do not refuse a cookie the browser still sends
/// (and would not refresh).
const BOUND_GRACE: Duration = Duration::from_secs(60);

/// Seals a bound cookie for the binding `id`, good until `now` + `lifetime`
/// (and [`BOUND_GRACE`]). It
/// has the session cookie's format (v1); its session-id field carries the
/// binding's identifier and it is sealed for the bound cookie's own name, so it
/// opens as nothing else.
pub(crate) fn seal_bound(
    keys: &Keys,
    name: &str,
    id: &str,
    now: Timestamp,
    lifetime: Duration,
) -> Option<String> {
    let sid = binding_id_bytes(id)?;
    let mut data = CookieData::generate(now, now.saturating_add(lifetime + BOUND_GRACE), false);
    data.sid = sid;
    // The record secret field is unused in a bound cookie.
    data.record_secret.fill(0);
    Some(cookie::seal(keys, name, &data))
}

/// Why a request's bound cookie does not make its bound session one; the
/// later variants tell more, and win when a request brought several cookies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Refusal {
    /// No bound cookie came (or none that opens).
    Missing,
    /// The bound cookie's time is up.
    Expired,
    /// The bound cookie belongs to another binding.
    Foreign,
}

impl Refusal {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Expired => "expired",
            Refusal::Foreign => "foreign",
        }
    }
}

/// Whether the bound cookie values `values` (as the request sent them) hold
/// one for the binding `id` that is still good at `now`.
pub(crate) fn check_bound<'a>(
    keys: &Keys,
    name: &str,
    id: &str,
    values: impl Iterator<Item = &'a [u8]>,
    now: Timestamp,
) -> Result<(), Refusal> {
    let Some(expected) = binding_id_bytes(id) else {
        return Err(Refusal::Foreign);
    };
    let mut refusal = Refusal::Missing;
    // Only values of a sealed cookie's length are opened, and no more than a
    // handful: junk cookies of the same name (tossed by a sibling subdomain)
    // cannot hide the real one, and a cookie bomb opens no more than this.
    let sealed = values.filter(|value| value.len() == cookie::ENCODED_LEN);
    for value in sealed.take(8) {
        let Ok(opened) = cookie::open(keys, name, value) else {
            continue;
        };
        if opened.data.sid != expected {
            refusal = refusal.max(Refusal::Foreign);
        } else if opened.data.lifespan_deadline <= now {
            refusal = refusal.max(Refusal::Expired);
        } else {
            return Ok(());
        }
    }
    Err(refusal)
}

fn binding_id_bytes(id: &str) -> Option<[u8; 16]> {
    use base64::Engine;
    let mut out = [0u8; 16];
    let mut buf = [0u8; 24];
    let len = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode_slice(id, &mut buf)
        .ok()?;
    (len == 16).then(|| {
        out.copy_from_slice(&buf[..16]);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Timestamp {
        Timestamp::from_unix_millis(ms)
    }

    #[test]
    fn challenges_are_single_use_short_lived_and_few() {
        let mut entry = Entry::default();
        let issue = |entry: &mut Entry, now: Timestamp| {
            let value = random_token();
            entry.add_challenge(value.clone(), now);
            value
        };
        let first = issue(&mut entry, at(1_000));
        assert_eq!(
            entry.recent_challenge(at(20_000), Duration::from_secs(30)),
            Some(first.as_str())
        );
        assert_eq!(
            entry.recent_challenge(at(40_000), Duration::from_secs(30)),
            None
        );
        assert!(entry.take_challenge(&first, at(2_000)));
        assert!(!entry.take_challenge(&first, at(2_000)), "used once");
        let stale = issue(&mut entry, at(1_000));
        let late = at(1_000).saturating_add(CHALLENGE_LIFETIME);
        assert!(!entry.take_challenge(&stale, late), "expired");
        let issued: Vec<String> = (0..4).map(|_| issue(&mut entry, at(5_000))).collect();
        assert_eq!(entry.challenges.len(), MAX_CHALLENGES);
        assert!(
            !entry.take_challenge(&issued[0], at(5_000)),
            "the oldest dropped"
        );
        assert!(entry.take_challenge(&issued[3], at(5_000)));
    }

    #[test]
    fn a_bound_cookie_opens_for_its_binding_until_it_expires() {
        let keys = Keys::generate();
        let id = random_token();
        let now = at(1_700_000_000_000);
        let sealed = seal_bound(&keys, "id_bound", &id, now, Duration::from_secs(60)).unwrap();
        let check = |name: &str, id: &str, when: Timestamp| {
            check_bound(&keys, name, id, std::iter::once(sealed.as_bytes()), when)
        };
        assert_eq!(check("id_bound", &id, now), Ok(()));
        let within_grace = now.saturating_add(Duration::from_secs(60 + 59));
        assert_eq!(
            check("id_bound", &id, within_grace),
            Ok(()),
            "a minute's grace"
        );
        let later = now.saturating_add(Duration::from_secs(60) + BOUND_GRACE);
        assert_eq!(check("id_bound", &id, later), Err(Refusal::Expired));
        assert_eq!(
            check("id_bound", &random_token(), now),
            Err(Refusal::Foreign)
        );
        assert_eq!(
            check("id", &id, now),
            Err(Refusal::Missing),
            "sealed for its name"
        );
        assert_eq!(
            check_bound(&keys, "id_bound", &id, std::iter::empty(), now),
            Err(Refusal::Missing)
        );
        assert_eq!(
            seal_bound(&keys, "id_bound", "not an id", now, Duration::ZERO),
            None
        );
    }

    #[test]
    fn a_challenge_is_answerable_for_five_minutes_and_not_at_five() {
        // Written out, not CHALLENGE_LIFETIME: a changed constant fails here.
        let five_minutes = 5 * 60 * 1000;
        let mut entry = Entry::default();
        entry.add_challenge("c".to_owned(), at(1_000));
        assert!(
            entry
                .clone()
                .take_challenge("c", at(1_000 + five_minutes - 1))
        );
        assert!(!entry.take_challenge("c", at(1_000 + five_minutes)));
    }

    #[test]
    fn adding_a_challenge_drops_those_expired_at_that_instant() {
        let mut entry = Entry::default();
        entry.add_challenge("old".to_owned(), at(1_000));
        let expiry = at(1_000).saturating_add(CHALLENGE_LIFETIME);
        entry.add_challenge("new".to_owned(), expiry);
        let kept: Vec<&str> = entry.challenges.iter().map(|c| c.value.as_str()).collect();
        assert_eq!(
            kept,
            ["new"],
            "a challenge expired is not kept in the record"
        );
    }

    #[test]
    fn the_recent_challenge_is_handed_out_again_within_its_window_only() {
        let mut entry = Entry::default();
        entry.add_challenge("c".to_owned(), at(1_000));
        let within = Duration::from_secs(30);
        assert_eq!(
            entry.recent_challenge(at(1_000 + 29_999), within),
            Some("c")
        );
        assert_eq!(
            entry.recent_challenge(at(1_000 + 30_000), within),
            None,
            "the window is open at its start and closed at its end"
        );
        // Even asked with a window longer than a challenge lives, an expired
        // challenge is never handed out again: the browser's proof of it
        // would be refused.
        let long = Duration::from_secs(60 * 60);
        let expiry = 1_000 + 5 * 60 * 1000;
        assert_eq!(entry.recent_challenge(at(expiry - 1), long), Some("c"));
        assert_eq!(entry.recent_challenge(at(expiry), long), None);
    }

    #[test]
    fn the_paths_read_back_as_set_and_default_to_well_known_ones() {
        let binding = DeviceBinding::new();
        assert_eq!(
            binding.registration_path(),
            "/.well-known/sealed-sessions/register"
        );
        assert_eq!(
            binding.refresh_path(),
            "/.well-known/sealed-sessions/refresh"
        );
        let binding = binding
            .with_registration_path("/dbsc/reg")
            .with_refresh_path("/dbsc/refresh");
        assert_eq!(binding.registration_path(), "/dbsc/reg");
        assert_eq!(binding.refresh_path(), "/dbsc/refresh");
    }

    #[test]
    fn the_registration_header_lists_the_algorithms_path_and_challenge() {
        let header = DeviceBinding::new().registration_header("abc");
        assert_eq!(
            header,
            "(ES256 RS256);path=\"/.well-known/sealed-sessions/register\";challenge=\"abc\""
        );
    }
}
