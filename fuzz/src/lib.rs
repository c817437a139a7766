//! The harness the fuzz targets share: fixed keys and a fixed clock, the crate's
//! own `MemoryStore` (whose futures are ready at once), a tiny inner service that
//! records what it saw, and a poll loop to drive the layer without a runtime.
//!
//! The cookie parser, the cookie opener and the record opener are crate-private
//! (`cookie::request_values`, `cookie::open`, `record::DataCipher::open`), so the
//! targets reach them the way a client does: through `SessionLayer`'s service with
//! request headers and store contents they control.

pub mod fixtures;

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, header};
use serde_json::Value;
use tower_layer::Layer;
use tower_sealed_sessions::store::{Deadlines, Record, SessionStore, StoreKey, Timestamp};
use tower_sealed_sessions::{Clock, Keys, ManualClock, MemoryStore, Secret, Session, SessionLayer};
use tower_service::Service;

pub use fixtures::{ISSUED, Issued};

/// The instant every fuzz request happens at (and the fixtures were issued at).
pub const NOW_MS: u64 = 1_700_000_000_000;
/// The session cookie's name (the crate's default).
pub const COOKIE_NAME: &str = "id";
/// The token header of the header-mode layer.
pub const HEADER_NAME: &str = "x-session";

/// 64 distinct bytes: passes the crate's low-entropy check, and is the same on
/// every run, so tokens sealed once stay valid.
fn fixed_secret(mul: u8, add: u8) -> [u8; 64] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(mul).wrapping_add(add))
}

pub fn primary_secret() -> [u8; 64] {
    fixed_secret(37, 11)
}

pub fn previous_secret() -> [u8; 64] {
    fixed_secret(91, 200)
}

/// The ring the targets open tokens with: the primary key, then a previous one.
pub fn keys() -> Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let previous = Secret::from_bytes(previous_secret().to_vec()).expect("fixed secret");
        Keys::from_secret(&primary_secret())
            .expect("fixed secret")
            .with_previous(&previous)
    })
    .clone()
}

/// Which way the token travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Cookie,
    Header,
}

/// The fixed clock every layer and store of the harness runs on.
pub fn clock() -> Clock {
    ManualClock::at(Timestamp::from_unix_millis(NOW_MS)).into()
}

/// An empty store on the fixed clock.
pub fn store() -> MemoryStore {
    MemoryStore::builder().clock(clock()).max_sessions(1_000).build()
}

/// A layer on `store` with `keys`, at the fixed instant.
pub fn layer_with(store: MemoryStore, keys: Keys, mode: Mode) -> SessionLayer {
    // The oracle service reads the session inside `call`, which cannot await a
    // load: every session is loaded before it runs.
    let layer = SessionLayer::new(store, keys)
        .with_clock(clock())
        .with_eager_load(true);
    match mode {
        Mode::Cookie => layer,
        Mode::Header => layer.with_header(HEADER_NAME),
    }
}

/// A layer on `store` with the fuzz keyring.
pub fn layer(store: MemoryStore, mode: Mode) -> SessionLayer {
    layer_with(store, keys(), mode)
}

/// What the handler does with the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Read,
    Insert,
    Remove,
    Clear,
    Cycle,
    Destroy,
    DestroyThenInsert,
    RememberOn,
    RememberOff,
    Extend,
    ServerError,
    Login,
    Logout,
    /// Used to issue fixtures: sets `tag`, and remember-me when asked.
    Seed { tag: i64, remember_me: bool },
}

const PICKABLE: [Action; 13] = [
    Action::Read,
    Action::Insert,
    Action::Remove,
    Action::Clear,
    Action::Cycle,
    Action::Destroy,
    Action::DestroyThenInsert,
    Action::RememberOn,
    Action::RememberOff,
    Action::Extend,
    Action::ServerError,
    Action::Login,
    Action::Logout,
];

impl Action {
    pub fn from_byte(b: u8) -> Self {
        PICKABLE[usize::from(b) % PICKABLE.len()]
    }
}

/// What the inner service saw of the session, before it acted.
#[derive(Clone, Debug)]
pub struct Seen {
    pub is_new: bool,
    pub tag: Option<Value>,
}

#[derive(Clone)]
struct App {
    action: Action,
    seen: Arc<Mutex<Option<Seen>>>,
}

impl Service<Request<()>> for App {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        let session = req
            .extensions()
            .get::<Session>()
            .expect("the layer puts a Session into every request it passes on")
            .clone();
        let seen = Seen {
            is_new: session.is_new(),
            tag: session
                .get::<Value>("tag")
                .expect("any stored JSON value reads back as a Value"),
        };
        // The accessors must cope with any deadlines a record or cookie carries.
        let _ = (
            session.created_at(),
            session.expires_at(),
            session.idle_expires_at(),
            session.remember_me(),
            session.is_empty(),
            session.user_id(),
            session.fingerprint(),
            format!("{session:?}"),
        );
        let mut status = StatusCode::OK;
        match self.action {
            Action::Read => {}
            Action::Insert => {
                let n = session.get::<u64>("n").ok().flatten().unwrap_or(0);
                session.insert("n", n.wrapping_add(1)).expect("a u64 serializes");
            }
            Action::Remove => {
                session.remove("tag");
            }
            Action::Clear => session.clear(),
            Action::Cycle => session.cycle_id(),
            Action::Destroy => session.destroy(),
            Action::DestroyThenInsert => {
                session.destroy();
                session.insert("n", 1u64).expect("a u64 serializes");
            }
            Action::RememberOn => session.set_remember_me(true),
            Action::RememberOff => session.set_remember_me(false),
            Action::Extend => session.extend(),
            Action::ServerError => {
                session.insert("n", 7u64).expect("a u64 serializes");
                status = StatusCode::INTERNAL_SERVER_ERROR;
            }
            Action::Login => session.set_user_id("alice"),
            Action::Logout => session.clear_user_id(),
            Action::Seed { tag, remember_me } => {
                session.insert("tag", tag).expect("an i64 serializes");
                if remember_me {
                    session.set_remember_me(true);
                }
            }
        }
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(seen);
        let mut res = Response::new(());
        *res.status_mut() = status;
        ready(Ok(res))
    }
}

/// Polls `fut` to completion with a no-op waker. The stub store never pends, so a
/// future that is still pending after many polls is a bug of its own.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..64 {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("the session future is still pending though the store never pends");
}

/// A response, and what the handler saw.
pub struct Outcome {
    pub seen: Seen,
    pub status: StatusCode,
    pub headers: HeaderMap,
}

impl Outcome {
    /// The value our `Set-Cookie` gives the session cookie (`""` when it removes
    /// it), if there is one. Panics on more than one.
    pub fn set_cookie(&self) -> Option<String> {
        let mut found = None;
        for value in self.headers.get_all(header::SET_COOKIE) {
            let text = value.to_str().expect("Set-Cookie is printable ASCII");
            let pair = text.split(';').next().unwrap_or("");
            let (name, value) = pair.split_once('=').expect("Set-Cookie has name=value");
            if name == COOKIE_NAME {
                assert!(found.is_none(), "two Set-Cookie for the session: {:?}", self.headers);
                found = Some(value.to_owned());
            }
        }
        found
    }

    /// The token header of a header-mode response (`""` tells the client to drop it).
    pub fn header_token(&self) -> Option<String> {
        let mut all = self.headers.get_all(HEADER_NAME).iter();
        let first = all.next()?;
        assert!(all.next().is_none(), "two token headers: {:?}", self.headers);
        Some(first.to_str().expect("the token is base64").to_owned())
    }

    /// The token this response hands out or clears, whichever the mode.
    pub fn token(&self, mode: Mode) -> Option<String> {
        match mode {
            Mode::Cookie => self.set_cookie(),
            Mode::Header => self.header_token(),
        }
    }
}

/// One request with `headers` through `layer`, the handler doing `action`.
pub fn run(layer: &SessionLayer, headers: HeaderMap, action: Action) -> Outcome {
    let seen = Arc::new(Mutex::new(None));
    let mut service = layer.layer(App {
        action,
        seen: seen.clone(),
    });
    let mut req = Request::new(());
    *req.headers_mut() = headers;
    let res = block_on(async {
        std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
        service.call(req).await
    });
    let res = match res {
        Ok(res) => res,
        Err(never) => match never {},
    };
    let seen = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .expect("the store never fails, so the inner service is always called");
    let (parts, ()) = res.into_parts();
    Outcome {
        seen,
        status: parts.status,
        headers: parts.headers,
    }
}

/// Headers carrying `token` the way `mode` expects it.
pub fn token_headers(mode: Mode, token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    match mode {
        Mode::Cookie => {
            let value = HeaderValue::try_from(format!("{COOKIE_NAME}={token}"))
                .expect("a token is a valid header value");
            headers.insert(header::COOKIE, value);
        }
        Mode::Header => {
            headers.insert(
                HeaderName::from_static(HEADER_NAME),
                HeaderValue::try_from(token).expect("a token is a valid header value"),
            );
        }
    }
    headers
}

/// Puts `record` under `key` (replacing what was there).
pub fn put(store: &MemoryStore, key: [u8; 32], record: &Record) {
    let key = StoreKey::from_bytes(key);
    block_on(store.delete(&key)).expect("the memory store does not fail");
    let created = block_on(store.create(&key, record)).expect("the memory store does not fail");
    assert!(created || record.deadlines.is_expired(Timestamp::from_unix_millis(NOW_MS)));
}

/// A fresh store holding the record of every fixture token, as issued. (Reusing
/// one store across inputs and resetting the fixtures was measured ten times
/// slower, when the store was built on moka, whose maintenance grew with what
/// earlier inputs left.)
pub fn fixture_store() -> MemoryStore {
    let store = store();
    for issued in ISSUED {
        put(&store, issued.store_key(), &issued.record());
    }
    store
}

/// Deadlines with the given idle and lifespan deadlines. Any other field the crate
/// adds to `Deadlines` is taken from a record the layer itself wrote.
#[allow(unused_variables, clippy::needless_update)]
pub fn deadlines(idle: u64, lifespan: u64) -> Deadlines {
    static TEMPLATE: OnceLock<Deadlines> = OnceLock::new();
    let template = TEMPLATE.get_or_init(|| {
        let store = store();
        let layer = layer(store.clone(), Mode::Cookie);
        run(&layer, HeaderMap::new(), Action::Seed { tag: 0, remember_me: false });
        store.dump().first().expect("a new session is stored").1.deadlines
    });
    Deadlines {
        idle: Timestamp::from_unix_millis(idle),
        lifespan: Timestamp::from_unix_millis(lifespan),
        ..*template
    }
}

impl Issued {
    pub fn mode(&self) -> Mode {
        if self.header_mode {
            Mode::Header
        } else {
            Mode::Cookie
        }
    }

    pub fn store_key(&self) -> [u8; 32] {
        unhex(self.store_key_hex)
            .try_into()
            .expect("a store key is 32 bytes")
    }

    pub fn data(&self) -> Vec<u8> {
        unhex(self.data_hex)
    }

    pub fn record(&self) -> Record {
        Record::new(
            self.version,
            deadlines(self.idle_ms, self.lifespan_ms),
            self.data().into(),
        )
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Vec<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => panic!("not lowercase hex"),
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| digit(pair[0]) << 4 | digit(pair[1]))
        .collect()
}
