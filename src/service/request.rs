//! Reading what a request brought: its session tokens, opened with the keyring,
//! and for one authentic token its record, loaded and opened.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Request, header};

use crate::audit::{AUDIT_TARGET, Fingerprint, audit_expired, audit_rejected_record};
use crate::clock::Timestamp;
use crate::cookie::{self, Opened};
use crate::error::StoreError;
use crate::record::{DataCipher, Record, StoreKey, user_of};
use crate::session::{Brought, Loaded, Session};
use crate::settings::Settings;

const TARGET: &str = "tower_sealed_sessions";
/// How many store keys of an ambiguous request are kept: enough to name in the
/// audit trail and to end on logout.
const MAX_AMBIGUOUS: usize = 8;

/// What a request's tokens come to before any store I/O.
pub(super) enum Tokens {
    /// Decided from the tokens alone.
    Read(Brought),
    /// One authentic session (possibly sent more than once), whose record is
    /// loaded next.
    One(Opened),
}

/// The store key of the session an opened token names.
#[inline]
pub(super) fn store_key(settings: &Settings, opened: &Opened) -> StoreKey {
    StoreKey::derive(&settings.keys.ring[opened.key_index], &opened.data.sid)
}

/// Opens every `Cookie` header's session cookie, or every value of the session
/// header.
///
/// Cookie tossing: a page on a sibling subdomain, or on another path of the same
/// host, can plant a second cookie of the same name (with its own Domain or Path)
/// holding the attacker's own, perfectly authentic, session; the browser then
/// sends both, the planted one first when its Path is longer. Whichever we picked,
/// one of them could be the attacker's, and the victim would act inside it (login
/// CSRF, session swapping). So tokens that open to two different sessions, even
/// one past its lifespan, make the request [ambiguous](Brought::Ambiguous): it gets
/// a session that is never saved. Invalid tokens beside one valid token are
/// ignored, and cleared only when no token is valid.
pub(super) fn read_tokens(settings: &Settings, headers: &HeaderMap, now: Timestamp) -> Tokens {
    match &settings.header {
        None => open_all(
            settings,
            cookie::request_values(headers, &settings.cookie.name),
            now,
        ),
        Some(name) => {
            let values = headers.get_all(name).iter();
            open_all(settings, values.map(|v| v.as_bytes().trim_ascii()), now)
        }
    }
}

fn open_all<'a>(
    settings: &Settings,
    values: impl Iterator<Item = &'a [u8]>,
    now: Timestamp,
) -> Tokens {
    let name = settings.token_name();
    let mut invalid = 0u32;
    let mut first_reason = None;
    let mut found: Option<Opened> = None;
    let mut others: Vec<StoreKey> = Vec::new();
    for value in values {
        match cookie::open(&settings.keys, name, value) {
            Ok(opened) => match &found {
                None => found = Some(opened),
                Some(first) if first.data.sid == opened.data.sid => {}
                Some(_) => {
                    let key = store_key(settings, &opened);
                    if !others.contains(&key) && others.len() < MAX_AMBIGUOUS {
                        others.push(key);
                    }
                }
            },
            Err(reason) => {
                invalid += 1;
                first_reason.get_or_insert(reason);
            }
        }
    }
    if let Some(reason) = first_reason {
        // One event per request, however many tokens it carries. Not authentic, so
        // there is no session to name.
        tracing::info!(target: AUDIT_TARGET, event = "rejected", %reason, count = invalid);
    }
    let Some(opened) = found else {
        return Tokens::Read(if invalid > 0 {
            Brought::Refused
        } else {
            Brought::Nothing
        });
    };
    if !others.is_empty() {
        others.insert(0, store_key(settings, &opened));
        let fingerprints: Vec<String> = others
            .iter()
            .map(|k| Fingerprint::of(k).to_string())
            .collect();
        tracing::warn!(target: TARGET, "session cookies name different sessions (cookie tossing, or a changed cookie Domain or Path): the request's session is not saved");
        tracing::info!(target: AUDIT_TARGET, event = "rejected", reason = "several sessions in one request", fingerprints = ?fingerprints);
        return Tokens::Read(Brought::Ambiguous(others));
    }
    if now >= opened.data.lifespan_deadline {
        audit_expired(&store_key(settings, &opened), "lifespan");
        return Tokens::Read(Brought::Refused);
    }
    Tokens::One(opened)
}

/// The session of a request whose one authentic token named `store_key`, once its
/// record is loaded: live, or fresh when the record is gone or refused; `None` when
/// the store failed and the request must be answered with 503.
pub(super) fn open_record(
    settings: &Arc<Settings>,
    now: Timestamp,
    opened: Opened,
    store_key: StoreKey,
    loaded: Result<Option<Record>, StoreError>,
) -> Option<Session> {
    let fresh = |brought| Some(Session::new(settings.clone(), now, brought));
    let record = match loaded {
        Ok(Some(record)) => record,
        Ok(None) => {
            // Ended, expired (Redis drops records itself), or moved by a login.
            audit_expired(&store_key, "missing");
            return fresh(Brought::Nothing);
        }
        // A value the store cannot decode would fail every request of this cookie
        // until it expires: refuse the cookie instead.
        Err(StoreError::Corrupt(reason)) => {
            audit_rejected_record(&store_key, "corrupt", &reason);
            return fresh(Brought::Refused);
        }
        Err(err) => {
            tracing::error!(target: TARGET, error = %err, "session load failed");
            return None;
        }
    };
    if record.deadlines.is_expired(now) {
        let ended = now >= record.deadlines.lifespan;
        audit_expired(&store_key, if ended { "lifespan" } else { "idle" });
        return fresh(Brought::Nothing);
    }
    let key_set = &settings.keys.ring[opened.key_index];
    let cipher = DataCipher::new(key_set, &opened.data.record_secret);
    let data = match cipher.open(&store_key, &record.data) {
        Ok(data) => data,
        Err(reason) => {
            // The AEAD already vouched for the cookie, so this is the store's side:
            // tampering, a record moved between keys, or corruption.
            audit_rejected_record(&store_key, "rejected", &reason);
            return fresh(Brought::Refused);
        }
    };
    let user = user_of(&data).map(str::to_owned);
    let loaded = Loaded {
        cookie: opened.data,
        key_index: opened.key_index,
        store_key,
        version: record.version,
        deadlines: record.deadlines,
        cipher,
        user,
    };
    Some(Session::opened(settings.clone(), now, loaded, data))
}

/// The content type of a gRPC (or grpc-web) request, echoed in our own answers.
pub(super) fn grpc_content_type<B>(req: &Request<B>) -> Option<HeaderValue> {
    req.headers()
        .get(header::CONTENT_TYPE)
        .filter(|ct| ct.as_bytes().starts_with(b"application/grpc"))
        .cloned()
}
