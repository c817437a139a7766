//! Opening what a request brought: its session tokens, opened with the keyring,
//! and for one authentic token its record, loaded from the store and opened. The
//! layer does this before calling the inner service when loads are eager, and
//! [`Session::load`](crate::Session::load) on first use when they are lazy.

use http::{HeaderValue, header};

use crate::audit::{AUDIT_TARGET, Fingerprint, audit_expired, audit_rejected_record};
use crate::clock::Timestamp;
use crate::cookie::{self, CookieData, Opened};
use crate::error::StoreError;
use crate::record::{Data, DataCipher, Deadlines, Record, StoreKey};
use crate::settings::Settings;
use crate::store::{BoxFuture, UserTag};

const TARGET: &str = "tower_sealed_sessions";
/// The most session tokens a request may carry. Each costs an AEAD open, and an
/// HTTP/1 header holds thousands of forged ones (a cookie bomb): a request with
/// more is ambiguous, and none of its tokens is opened past this many.
const MAX_TOKENS: usize = 8;

/// Where a store's part of a request stands once started.
pub(crate) enum Outcome<T> {
    /// Done already: the store is [`IMMEDIATE`](crate::store::SessionStore::IMMEDIATE).
    Done(Result<T, StoreError>),
    /// To be awaited.
    Later(BoxFuture<Result<T, StoreError>>),
}

/// Where a session's record is loaded from: the layer's store, behind a `dyn`.
pub(crate) trait RecordSource: Send + Sync + 'static {
    fn load(&self, key: StoreKey) -> Outcome<Option<Record>>;
}

/// The lines of the header that carries a request's tokens (`Cookie`, or the
/// session header), kept unopened until the session is loaded. One line, the
/// usual case, costs no allocation: the value shares the request's bytes.
pub(crate) enum Lines {
    One(HeaderValue),
    Many(Box<[HeaderValue]>),
}

impl Lines {
    /// The lines of the carrier header; `None` when there is none, so there is
    /// nothing to open. They are not looked into here: a request whose handler
    /// never uses its session pays for no parsing either.
    pub(crate) fn of<'a>(all: impl IntoIterator<Item = &'a HeaderValue>) -> Option<Lines> {
        let mut all = all.into_iter();
        let first = all.next()?;
        Some(match all.next() {
            None => Lines::One(first.clone()),
            Some(second) => {
                let mut many = vec![first.clone(), second.clone()];
                many.extend(all.cloned());
                Lines::Many(many.into_boxed_slice())
            }
        })
    }

    pub(crate) fn iter(&self) -> std::slice::Iter<'_, HeaderValue> {
        match self {
            Lines::One(line) => std::slice::from_ref(line).iter(),
            Lines::Many(lines) => lines.iter(),
        }
    }
}

/// The name of the header that carries `settings`' tokens.
pub(crate) fn carrier(settings: &Settings) -> &http::HeaderName {
    static COOKIE: http::HeaderName = header::COOKIE;
    settings.header.as_ref().unwrap_or(&COOKIE)
}

/// What a request's tokens come to before any store I/O.
pub(crate) enum Tokens {
    /// Decided from the tokens alone.
    Read(Brought),
    /// One authentic session (possibly sent more than once), whose record is
    /// loaded next.
    One(Opened),
}

/// What a request brought when it brings no live session.
pub(crate) enum Brought {
    /// No token, or an authentic one whose session has ended (logged out, expired,
    /// or moved to a new id by a concurrent login): a fresh session. The token is
    /// left alone, since clearing it could race with the response that sets its
    /// successor; its own sealed lifespan still ends it without store I/O.
    Nothing,
    /// A token to clear: forged, altered, past its lifespan, or its record refused.
    Refused,
    /// Authentic tokens naming different sessions (cookie tossing, or a cookie
    /// whose Domain or Path changed): their store keys. Empty for a request with
    /// more tokens than are opened (a cookie bomb).
    Ambiguous(Vec<StoreKey>),
    /// A live session bound to a device, without a valid bound cookie: withheld
    /// (see [`Session::is_withheld`]).
    Unbound,
}

/// A session record as this request found it.
pub(crate) struct Loaded {
    pub(crate) cookie: CookieData,
    /// Which key of the ring opened the cookie; not 0 means it must be re-sealed.
    pub(crate) key_index: usize,
    pub(crate) store_key: StoreKey,
    pub(crate) version: u64,
    pub(crate) deadlines: Deadlines,
    pub(crate) cipher: DataCipher,
    /// The user the session was tied to when it was loaded.
    pub(crate) user: Option<String>,
}

impl Loaded {
    /// The tag of the session's user, under the key that sealed the session (the
    /// key its index entry was written with).
    pub(crate) fn user_tag(&self, settings: &Settings) -> Option<UserTag> {
        let keys = &settings.keys.ring[self.key_index];
        self.user.as_deref().map(|u| UserTag::derive(keys, u))
    }
}

/// What a request's session starts from.
// Made once per request and taken apart at once, on the stack: boxing the live
// variant would cost an allocation on every read.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Start {
    /// No live session: a fresh one.
    Fresh(Brought),
    /// A live record, opened: its data.
    Opened(Loaded, Data),
}

/// The store key of the session an opened token names.
#[inline]
pub(crate) fn store_key(settings: &Settings, opened: &Opened) -> StoreKey {
    StoreKey::derive(&settings.keys.ring[opened.key_index], &opened.data.sid)
}

/// Opens every session cookie of the `Cookie` header's `lines`, or every line of
/// the session header.
///
/// Cookie tossing: a page on a sibling subdomain, or on another path of the same
/// host, can plant a second cookie of the same name (with its own Domain or Path)
/// holding the attacker's own, perfectly authentic, session; the browser then
/// sends both, the planted one first when its Path is longer. Whichever we picked,
/// one of them could be the attacker's, and the victim would act inside it (login
/// CSRF, session swapping). So tokens that open to two different sessions, even
/// one past its lifespan, make the request [ambiguous](Brought::Ambiguous): it gets
/// a session that is never saved. Invalid tokens beside one valid token are
/// ignored, and cleared only when no token is valid. A request with more than
/// [`MAX_TOKENS`] tokens is ambiguous too, whatever they hold: it gets a session
/// that is never saved, and nothing is cleared.
pub(crate) fn read_tokens<'a>(
    settings: &Settings,
    lines: impl IntoIterator<Item = &'a HeaderValue>,
    now: Timestamp,
) -> Tokens {
    match &settings.header {
        None => open_all(
            settings,
            cookie::request_values(lines, &settings.cookie.name),
            now,
        ),
        Some(header) if *header == header::AUTHORIZATION => open_all(
            settings,
            lines
                .into_iter()
                .filter_map(|v| bearer(v.as_bytes()))
                .filter(|t| !t.is_empty()),
            now,
        ),
        Some(_) => open_all(
            settings,
            lines
                .into_iter()
                .map(|v| v.as_bytes().trim_ascii())
                .filter(|t| !t.is_empty()),
            now,
        ),
    }
}

/// The token of an `Authorization: Bearer <token>` value (the scheme in any
/// case, RFC 6750); `None` for another scheme (`Basic`, ...), which is no
/// session token and is left alone.
pub(crate) fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, token) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    match token.first() {
        None => Some(token),
        Some(b' ') => Some(token.trim_ascii()),
        Some(_) => None,
    }
}

/// Whether a request wants its session in the header (when the cookie is
/// accepted too): it sent the header (for `Authorization`, a `Bearer` one, even
/// without a token: how an API client asks for its first token), or it is a
/// gRPC request.
pub(crate) fn wants_header<B>(header: &http::HeaderName, req: &http::Request<B>) -> bool {
    let headers = req.headers();
    let sent = if *header == header::AUTHORIZATION {
        headers
            .get_all(header)
            .iter()
            .any(|v| bearer(v.as_bytes()).is_some())
    } else {
        headers.contains_key(header)
    };
    // gRPC proper (`application/grpc`, `application/grpc+proto`...), not
    // gRPC-web, whose browser clients keep the cookie.
    let grpc = headers.get(header::CONTENT_TYPE).is_some_and(|ct| {
        let ct = ct.as_bytes();
        ct == b"application/grpc" || ct.starts_with(b"application/grpc+")
    });
    sent || grpc
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
    for (i, value) in values.enumerate() {
        if i == MAX_TOKENS {
            crate::metrics::rejected("too_many_tokens");
            tracing::info!(target: AUDIT_TARGET, event = "rejected", outcome = "failure", reason = "too many session tokens in one request", limit = MAX_TOKENS);
            return Tokens::Read(Brought::Ambiguous(Vec::new()));
        }
        match cookie::open(&settings.keys, name, value) {
            Ok(opened) => match &found {
                None => found = Some(opened),
                Some(first) if first.data.sid == opened.data.sid => {}
                Some(_) => {
                    let key = store_key(settings, &opened);
                    if !others.contains(&key) {
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
        crate::metrics::rejected("invalid_token");
        tracing::info!(target: AUDIT_TARGET, event = "rejected", outcome = "failure", %reason, count = invalid);
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
        crate::metrics::rejected("ambiguous");
        tracing::info!(target: AUDIT_TARGET, event = "rejected", outcome = "failure", reason = "several sessions in one request", fingerprints = ?fingerprints);
        return Tokens::Read(Brought::Ambiguous(others));
    }
    // The ceiling from creation too: it ends sessions whose sealed lifespan was
    // carried past it before the layer had one.
    let ends = opened
        .data
        .lifespan_deadline
        .min(settings.ceiling(opened.data.created_at));
    if now >= ends {
        audit_expired(&store_key(settings, &opened), "lifespan");
        return Tokens::Read(Brought::Refused);
    }
    Tokens::One(opened)
}

/// What the session of a request whose one authentic token named `store_key`
/// starts from, once its record is loaded: live, or fresh when the record is gone
/// or refused; the store's error when it failed (the request then gets 503).
pub(crate) fn open_record(
    settings: &Settings,
    now: Timestamp,
    mut opened: Opened,
    store_key: StoreKey,
    loaded: Result<Option<Record>, StoreError>,
) -> Result<Start, StoreError> {
    let fresh = |brought| Ok(Start::Fresh(brought));
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
            return Err(err);
        }
    };
    if record.deadlines.is_expired(now) {
        let ended = now >= record.deadlines.lifespan;
        audit_expired(&store_key, if ended { "lifespan" } else { "idle" });
        return fresh(Brought::Nothing);
    }
    let key_set = &settings.keys.ring[opened.key_index];
    let cipher = settings.data_cipher(&opened.data.record_secret);
    let (data, user) = match cipher.open(key_set, &store_key, &record) {
        Ok(inside) => {
            // The record, not the cookie, says whether the session is remembered
            // and when it ends: a copy of the cookie from before a change of either
            // must not bring the old one back.
            opened.data.remember_me =
                inside.remember_me(opened.data.remember_me, &record.deadlines);
            opened.data.lifespan_deadline = record.deadlines.lifespan;
            (inside.data, inside.user)
        }
        Err(reason) => {
            // The AEAD already vouched for the cookie, so this is the store's side:
            // tampering, a record moved between keys, or corruption.
            audit_rejected_record(&store_key, "rejected", &reason);
            return fresh(Brought::Refused);
        }
    };
    crate::metrics::loaded();
    let loaded = Loaded {
        cookie: opened.data,
        key_index: opened.key_index,
        store_key,
        version: record.version,
        deadlines: record.deadlines,
        cipher,
        user,
    };
    Ok(Start::Opened(loaded, data))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderName;

    use std::sync::Arc;

    use http::HeaderMap;

    use super::*;
    use crate::keys::Keys;
    use crate::record::Binding;
    use crate::session::Session;

    fn settings() -> Arc<Settings> {
        Arc::new(Settings::new(Keys::generate()))
    }

    fn now() -> Timestamp {
        Timestamp::from_unix_millis(1_700_000_000_000)
    }

    /// A token for a new identity, sealed for `settings`' carrier.
    fn token(settings: &Settings, lifespan: Duration) -> (String, CookieData) {
        let data = CookieData::generate(now(), now().saturating_add(lifespan), false);
        let sealed = cookie::seal(&settings.keys, settings.token_name(), &data);
        (sealed, data)
    }

    fn cookies(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(header::COOKIE, HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    /// What the tokens of `headers` come to, kept as the layer keeps them
    /// ([`Lines`]: one line, or several) and read as a load reads them.
    fn read(settings: &Settings, headers: &HeaderMap) -> &'static str {
        let Some(lines) = Lines::of(headers.get_all(carrier(settings))) else {
            return "nothing";
        };
        match read_tokens(settings, lines.iter(), now()) {
            Tokens::Read(Brought::Nothing) => "nothing",
            Tokens::Read(Brought::Refused) => "refused",
            Tokens::Read(Brought::Ambiguous(_)) => "ambiguous",
            Tokens::Read(Brought::Unbound) => "unbound",
            Tokens::One(_) => "one",
        }
    }

    #[test]
    fn the_lines_kept_are_the_carrier_headers_in_order() {
        assert!(Lines::of(cookies(&[]).get_all(header::COOKIE)).is_none());
        let one = cookies(&["a=1"]);
        let kept = Lines::of(one.get_all(header::COOKIE)).unwrap();
        assert!(matches!(kept, Lines::One(_)));
        let three = cookies(&["a=1", "b=2", "c=3"]);
        let kept = Lines::of(three.get_all(header::COOKIE)).unwrap();
        let seen: Vec<&HeaderValue> = kept.iter().collect();
        assert_eq!(
            seen,
            three.get_all(header::COOKIE).iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn tokens_come_to_nothing_one_refused_or_ambiguous() {
        let s = settings();
        let hour = Duration::from_secs(3600);
        let (a, _) = token(&s, hour);
        let (b, _) = token(&s, hour);
        assert_eq!(read(&s, &cookies(&[])), "nothing");
        assert_eq!(read(&s, &cookies(&["other=1"])), "nothing");
        assert_eq!(read(&s, &cookies(&["id=forged"])), "refused");
        assert_eq!(read(&s, &cookies(&[&format!("id={a}")])), "one");
        assert_eq!(
            read(&s, &cookies(&[&format!("id={a}; id={a}")])),
            "one",
            "the same session sent twice is one"
        );
        assert_eq!(
            read(&s, &cookies(&["id=forged", &format!("id={a}")])),
            "one",
            "a forged token beside a valid one is ignored"
        );
        assert_eq!(
            read(&s, &cookies(&[&format!("id={a}"), &format!("id={b}")])),
            "ambiguous"
        );
        let (ended, _) = token(&s, Duration::ZERO);
        assert_eq!(
            read(&s, &cookies(&[&format!("id={ended}")])),
            "refused",
            "past its sealed lifespan: refused without store I/O"
        );
        assert_eq!(
            read(&s, &cookies(&[&format!("id={a}"), &format!("id={ended}")])),
            "ambiguous",
            "an ended session still names a second session"
        );
    }

    #[test]
    fn a_cookie_bomb_is_ambiguous_and_opens_no_more_than_eight_tokens() {
        let s = settings();
        let (valid, _) = token(&s, Duration::from_secs(60));
        let eight: Vec<String> = (0..8).map(|_| "id=forged".to_owned()).collect();
        assert_eq!(read(&s, &cookies(&[&eight.join("; ")])), "refused");
        let mut nine = eight.clone();
        nine.push(format!("id={valid}"));
        match read_tokens(
            &s,
            cookies(&[&nine.join("; ")]).get_all(header::COOKIE),
            now(),
        ) {
            Tokens::Read(Brought::Ambiguous(keys)) => {
                assert!(keys.is_empty(), "the ninth is never opened")
            }
            _ => panic!("more than eight tokens are ambiguous"),
        }
        let bomb: Vec<String> = (0..3_000).map(|_| format!("id={valid}")).collect();
        assert_eq!(read(&s, &cookies(&[&bomb.join("; ")])), "ambiguous");
    }

    #[test]
    fn an_ambiguous_request_names_every_session_it_opened() {
        let s = settings();
        let line: Vec<String> = (0..MAX_TOKENS)
            .map(|_| format!("id={}", token(&s, Duration::from_secs(60)).0))
            .collect();
        match read_tokens(
            &s,
            cookies(&[&line.join("; ")]).get_all(header::COOKIE),
            now(),
        ) {
            Tokens::Read(Brought::Ambiguous(keys)) => assert_eq!(keys.len(), MAX_TOKENS),
            _ => panic!("expected an ambiguous request"),
        }
    }

    #[test]
    fn in_header_mode_only_the_header_is_read_and_its_name_is_bound() {
        let mut with_header = Settings::new(Keys::generate());
        with_header.header = Some(HeaderName::from_static("x-session"));
        let (sealed, _) = token(&with_header, Duration::from_secs(60));
        let mut headers = cookies(&[&format!("id={sealed}")]);
        assert_eq!(
            read(&with_header, &headers),
            "nothing",
            "cookies are not read"
        );
        headers.insert(
            "x-session",
            HeaderValue::from_str(&format!(" {sealed} ")).unwrap(),
        );
        assert_eq!(read(&with_header, &headers), "one");
        // A cookie's token does not open as a header's: the name is sealed in.
        let mut cookie_settings = Settings::new(with_header.keys.clone());
        cookie_settings.header = None;
        let (as_cookie, _) = token(&cookie_settings, Duration::from_secs(60));
        headers.insert("x-session", HeaderValue::from_str(&as_cookie).unwrap());
        assert_eq!(read(&with_header, &headers), "refused");
    }

    /// A token and its record, sealed for `settings`, with `data` in it.
    fn stored(settings: &Settings, data: &Data) -> (Opened, StoreKey, Record) {
        let (sealed, _) = token(settings, Duration::from_secs(3600));
        let opened = cookie::open(&settings.keys, settings.token_name(), &sealed).unwrap();
        let key = store_key(settings, &opened);
        let cipher = DataCipher::new(&opened.data.record_secret);
        let deadlines = Deadlines {
            idle: now().saturating_add(Duration::from_secs(60)),
            lifespan: opened.data.lifespan_deadline,
            active: now(),
        };
        let binding = Binding {
            version: 7,
            lifespan: deadlines.lifespan,
            remember_me: false,
        };
        let record = Record::new(7, deadlines, cipher.seal(&key, binding, data));
        (opened, key, record)
    }

    /// The session a record opens to; `None` when the store failed.
    fn open_record(
        settings: &Arc<Settings>,
        now: Timestamp,
        opened: Opened,
        key: StoreKey,
        loaded: Result<Option<Record>, StoreError>,
    ) -> Option<Session> {
        let start = super::open_record(settings, now, opened, key, loaded).ok()?;
        Some(Session::started(settings.clone(), now, start))
    }

    fn opened_kind(session: Option<Session>) -> &'static str {
        match session {
            None => "unavailable",
            Some(s) if s.fingerprint().is_some() => "live",
            Some(s) => match crate::plan::Decision::after_error(&s) {
                crate::plan::Decision::Done(crate::plan::TokenChange::Clear) => "refused",
                _ => "fresh",
            },
        }
    }

    #[test]
    fn a_record_opens_to_a_live_fresh_or_refused_session_or_none_when_the_store_fails() {
        let s = settings();
        let data = Data::from([("k".to_owned(), "v".into())]);
        let (opened, key, record) = stored(&s, &data);
        let live = open_record(&s, now(), opened, key, Ok(Some(record.clone()))).unwrap();
        assert_eq!(live.get::<String>("k").unwrap().as_deref(), Some("v"));
        assert_eq!(opened_kind(Some(live)), "live");

        let open = |loaded| {
            let (opened, key, _) = stored(&s, &data);
            opened_kind(open_record(&s, now(), opened, key, loaded))
        };
        assert_eq!(open(Ok(None)), "fresh", "gone: the token is left alone");
        let mut idle = record.clone();
        idle.deadlines.idle = now();
        assert_eq!(open(Ok(Some(idle))), "fresh", "expired: left alone too");
        assert_eq!(
            open(Ok(Some(record.clone()))),
            "refused",
            "another session's record does not open with this token"
        );
        assert_eq!(open(Err(StoreError::Corrupt("garbage".into()))), "refused");
        assert_eq!(
            open(Err(StoreError::backend("down"))),
            "unavailable",
            "a store failure is a 503, not a fresh session"
        );
    }

    #[test]
    fn an_expired_record_is_audited_with_the_deadline_that_ended_it() {
        let s = settings();
        let data = Data::new();
        let reason = |idle: Timestamp, lifespan: Timestamp| {
            let (opened, key, mut record) = stored(&s, &data);
            record.deadlines.idle = idle;
            record.deadlines.lifespan = lifespan;
            let logs = crate::testing::logs_of(|| {
                let session = open_record(&s, now(), opened, key, Ok(Some(record)));
                assert_eq!(opened_kind(session), "fresh");
            });
            if logs.contains("reason=\"lifespan\"") || logs.contains("reason=lifespan") {
                "lifespan"
            } else if logs.contains("reason=\"idle\"") || logs.contains("reason=idle") {
                "idle"
            } else {
                panic!("no expiry event: {logs}")
            }
        };
        let later = now().saturating_add(Duration::from_secs(60));
        assert_eq!(reason(now(), later), "idle");
        assert_eq!(reason(now(), now()), "lifespan");
        assert_eq!(reason(later, now()), "lifespan");
    }

    #[test]
    fn the_record_not_the_cookie_says_whether_a_session_is_remembered_and_when_it_ends() {
        let s = settings();
        let data = Data::new();
        // A cookie from before `set_remember_me(false)`: remembered, for 30 days.
        let (mut opened, key, record) = stored(&s, &data);
        opened.data.remember_me = true;
        opened.data.lifespan_deadline = now().saturating_add(Duration::from_secs(30 * 86_400));
        let session = open_record(&s, now(), opened, key, Ok(Some(record.clone()))).unwrap();
        assert!(!session.remember_me(), "the record's flag");
        assert_eq!(
            session.expires_at(),
            record.deadlines.lifespan.to_system_time(),
            "the record's lifespan"
        );
    }
}
