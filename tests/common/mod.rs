//! Helpers shared by the integration tests: a store that counts and fails on demand,
//! and a real loopback server.
#![allow(dead_code, unreachable_pub)]

#[cfg(feature = "redis")]
pub mod proxy;
pub mod redis;
pub mod users;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use tower_sealed_sessions::store::{
    CompareAndSet, Deadlines, IndexEntry, IndexSample, Record, SessionStore, StoreKey, Timestamp,
    UserTag,
};
use tower_sealed_sessions::{MemoryStore, StoreError};

/// A memory store that records every operation and fails while told to.
///
/// Its futures must be awaited (not [`SessionStore::IMMEDIATE`]), unless it is a
/// `TestStore<true>` from [`TestStore::immediate`].
#[derive(Clone, Default)]
pub struct TestStore<const IMMEDIATE: bool = false> {
    pub inner: MemoryStore,
    ops: Arc<Mutex<Vec<&'static str>>>,
    failing: Arc<AtomicBool>,
    failing_writes: Arc<AtomicBool>,
    corrupt_loads: Arc<AtomicBool>,
    contended: Arc<AtomicBool>,
    gate: Arc<Mutex<Option<Gate>>>,
}

/// Holds the next call of one operation until released.
#[derive(Clone)]
pub struct Gate {
    op: &'static str,
    /// Notified when the operation is reached and waiting.
    pub reached: Arc<tokio::sync::Notify>,
    /// Notify to let it go on.
    pub release: Arc<tokio::sync::Notify>,
}

impl TestStore {
    pub fn new(inner: MemoryStore) -> Self {
        TestStore {
            inner,
            ..TestStore::default()
        }
    }

    /// The same store, declared [`IMMEDIATE`](SessionStore::IMMEDIATE) as the
    /// memory store is: the layer runs its futures on the spot (a gate then makes
    /// one pending). It shares this one's records, switches and gate.
    pub fn immediate(&self) -> TestStore<true> {
        TestStore {
            inner: self.inner.clone(),
            ops: self.ops.clone(),
            failing: self.failing.clone(),
            failing_writes: self.failing_writes.clone(),
            corrupt_loads: self.corrupt_loads.clone(),
            contended: self.contended.clone(),
            gate: self.gate.clone(),
        }
    }

    /// The operations since the last call, in order.
    pub fn take_ops(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.ops.lock().unwrap())
    }

    /// Every operation fails.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// The next call of `op` waits, before it runs, until the gate is released.
    pub fn pause_before(&self, op: &'static str) -> Gate {
        let gate = Gate {
            op,
            reached: Arc::default(),
            release: Arc::default(),
        };
        *self.gate.lock().unwrap() = Some(gate.clone());
        gate
    }

    /// Every load finds a value it cannot decode.
    pub fn set_corrupt_loads(&self, corrupt: bool) {
        self.corrupt_loads.store(corrupt, Ordering::SeqCst);
    }

    /// Every compare-and-set (update, delete of a version) loses, as to a
    /// concurrent writer that always wins, and answers the current record.
    pub fn set_contended(&self, contended: bool) {
        self.contended.store(contended, Ordering::SeqCst);
    }

    /// Loads work, every write fails.
    pub fn set_failing_writes(&self, failing: bool) {
        self.failing_writes.store(failing, Ordering::SeqCst);
    }
}

impl<const IMMEDIATE: bool> TestStore<IMMEDIATE> {
    /// While contended: the conflict a compare-and-set on `key` meets.
    async fn lost(&self, key: &StoreKey) -> Option<CompareAndSet> {
        if !self.contended.load(Ordering::SeqCst) {
            return None;
        }
        Some(match self.inner.load(key).await.unwrap() {
            Some(current) => CompareAndSet::Conflict(current),
            None => CompareAndSet::Missing,
        })
    }

    async fn checkpoint(&self, op: &'static str) {
        let gate = {
            let mut slot = self.gate.lock().unwrap();
            match slot.as_ref() {
                Some(g) if g.op == op => slot.take(),
                _ => None,
            }
        };
        if let Some(gate) = gate {
            gate.reached.notify_one();
            gate.release.notified().await;
        }
    }

    fn enter(&self, op: &'static str) -> Result<(), StoreError> {
        self.ops.lock().unwrap().push(op);
        if op == "load" && self.corrupt_loads.load(Ordering::SeqCst) {
            return Err(StoreError::Corrupt("test store: undecodable value".into()));
        }
        let write = !matches!(op, "load" | "index_list");
        if self.failing.load(Ordering::SeqCst)
            || (write && self.failing_writes.load(Ordering::SeqCst))
        {
            Err(StoreError::backend(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "test store switched off",
            )))
        } else {
            Ok(())
        }
    }
}

impl<const IMMEDIATE: bool> SessionStore for TestStore<IMMEDIATE> {
    const IMMEDIATE: bool = IMMEDIATE;

    fn load(
        &self,
        key: &StoreKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        let entered = self.enter("load");
        let checkpoint = self.checkpoint("load");
        let key = *key;
        async move {
            checkpoint.await;
            entered?;
            self.inner.load(&key).await
        }
    }

    fn create(
        &self,
        key: &StoreKey,
        record: &Record,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let entered = self.enter("create");
        let checkpoint = self.checkpoint("create");
        async move {
            checkpoint.await;
            entered?;
            self.inner.create(key, record).await
        }
    }

    fn update(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send {
        let entered = self.enter("update");
        let checkpoint = self.checkpoint("update");
        async move {
            checkpoint.await;
            entered?;
            if let Some(lost) = self.lost(key).await {
                return Ok(lost);
            }
            self.inner.update(key, record, expected_version).await
        }
    }

    fn touch(
        &self,
        key: &StoreKey,
        deadlines: Deadlines,
        expected_version: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let entered = self.enter("touch");
        let checkpoint = self.checkpoint("touch");
        async move {
            checkpoint.await;
            entered?;
            self.inner.touch(key, deadlines, expected_version).await
        }
    }

    fn delete(&self, key: &StoreKey) -> impl Future<Output = Result<(), StoreError>> + Send {
        let entered = self.enter("delete");
        let checkpoint = self.checkpoint("delete");
        async move {
            checkpoint.await;
            entered?;
            self.inner.delete(key).await
        }
    }

    fn delete_version(
        &self,
        key: &StoreKey,
        expected_version: u64,
    ) -> impl Future<Output = Result<CompareAndSet, StoreError>> + Send {
        let entered = self.enter("delete_version");
        let checkpoint = self.checkpoint("delete_version");
        async move {
            checkpoint.await;
            entered?;
            if let Some(lost) = self.lost(key).await {
                return Ok(lost);
            }
            self.inner.delete_version(key, expected_version).await
        }
    }

    fn delete_expired(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let entered = self.enter("delete_expired");
        let checkpoint = self.checkpoint("delete_expired");
        async move {
            checkpoint.await;
            entered?;
            self.inner.delete_expired(now).await
        }
    }

    fn index_add(
        &self,
        user: &UserTag,
        entry: &IndexEntry,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let entered = self.enter("index_add");
        let checkpoint = self.checkpoint("index_add");
        async move {
            checkpoint.await;
            entered?;
            self.inner.index_add(user, entry).await
        }
    }

    fn index_remove(
        &self,
        user: &UserTag,
        keys: &[StoreKey],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let entered = self.enter("index_remove");
        let checkpoint = self.checkpoint("index_remove");
        async move {
            checkpoint.await;
            entered?;
            self.inner.index_remove(user, keys).await
        }
    }

    fn index_list(
        &self,
        user: &UserTag,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<IndexEntry>, StoreError>> + Send {
        let entered = self.enter("index_list");
        let checkpoint = self.checkpoint("index_list");
        async move {
            checkpoint.await;
            entered?;
            self.inner.index_list(user, now).await
        }
    }

    fn index_sample(
        &self,
        user: &UserTag,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<IndexSample, StoreError>> + Send {
        let entered = self.enter("index_sample");
        let checkpoint = self.checkpoint("index_sample");
        async move {
            checkpoint.await;
            entered?;
            self.inner.index_sample(user, now, limit).await
        }
    }
}

/// `GET /get/{key}` answers the session value as JSON (null when absent);
/// `POST /set/{key}/{value}` stores a string and answers 204; `POST /incr/{key}`
/// adds one to a counter with `Session::update` and answers the count it saw.
pub fn kv_routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    use axum::extract::Path;
    use axum::routing::{get, post};
    use serde_json::Value;
    use tower_sealed_sessions::Session;

    Router::new()
        // Under the layer but never looks at the session, as a static asset.
        .route("/untouched", get(|| async { "body {}" }))
        .route(
            "/get/{key}",
            get(|s: Session, Path(k): Path<String>| async move {
                axum::Json(s.get::<Value>(&k).unwrap().unwrap_or(Value::Null))
            }),
        )
        .route(
            "/set/{key}/{value}",
            post(
                |s: Session, Path((k, v)): Path<(String, String)>| async move {
                    s.insert(&k, v).unwrap();
                    axum::http::StatusCode::NO_CONTENT
                },
            ),
        )
        .route(
            "/incr/{key}",
            post(|s: Session, Path(k): Path<String>| async move {
                let n = s.update(&k, |n: Option<u64>| Some(n.unwrap_or(0) + 1));
                axum::Json(n.unwrap())
            }),
        )
}

/// Sends 100 concurrent increments of one counter in one session to `base`
/// (serving [`kv_routes`]) and checks that the counter went up by 100.
pub async fn hundred_concurrent_increments(base: &str) {
    let client = reqwest::Client::new();
    let res = client.post(format!("{base}/incr/n")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let cookie = cookie_pair(&res);
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let request = client
                .post(format!("{base}/incr/n"))
                .header(reqwest::header::COOKIE, &cookie);
            tokio::spawn(async move { request.send().await.unwrap().status() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let res = client
        .get(format!("{base}/get/n"))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    let n: serde_json::Value = res.json().await.unwrap();
    assert_eq!(n, serde_json::json!(101), "1 + 100 concurrent increments");
}

/// A new session on `base` (serving [`kv_routes`]), then `writers` concurrent
/// requests on it, taking turns over `bases` (servers of one store and one key,
/// as processes of one deployment): the even ones set a key of their own
/// (`k{i}`), the odd ones increment the counter `n`. Every one must answer 2xx;
/// the session's cookie is returned, for [`check_writers`].
pub async fn concurrent_writers(bases: &[String], writers: usize) -> String {
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{}/set/first/1", bases[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let cookie = cookie_pair(&res);
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let base = &bases[i % bases.len()];
            let path = if i % 2 == 0 {
                format!("/set/k{i}/{i}")
            } else {
                "/incr/n".into()
            };
            let request = client
                .post(format!("{base}{path}"))
                .header(reqwest::header::COOKIE, &cookie);
            tokio::spawn(async move { request.send().await.unwrap().status() })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for task in tasks {
        *statuses.entry(task.await.unwrap().as_u16()).or_default() += 1;
    }
    assert!(
        statuses.keys().all(|s| (200..300).contains(s)),
        "{writers} concurrent writers of one session over {} servers: {statuses:?}",
        bases.len()
    );
    cookie
}

/// What [`concurrent_writers`] wrote is all there: every key, and the counter at
/// the number of increments.
pub async fn check_writers(base: &str, cookie: &str, writers: usize) {
    let client = reqwest::Client::new();
    let get = async |key: String| -> serde_json::Value {
        let res = client
            .get(format!("{base}/get/{key}"))
            .header(reqwest::header::COOKIE, cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    };
    let lost: Vec<usize> = {
        let mut lost = Vec::new();
        for i in (0..writers).step_by(2) {
            if get(format!("k{i}")).await != serde_json::json!(i.to_string()) {
                lost.push(i);
            }
        }
        lost
    };
    assert!(lost.is_empty(), "keys lost: {lost:?}");
    assert_eq!(
        get("n".into()).await,
        serde_json::json!(writers / 2),
        "every increment counted"
    );
}

/// Everything a tracing subscriber writes, for a test to read back.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Installs, for the whole test binary, a subscriber that writes the events
    /// `filter` lets through here, without colours.
    pub fn install(filter: &str) -> Self {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        captured
    }

    /// What was written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A client that keeps cookies, like a browser.
pub fn jar_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

/// Serves `app` on a free loopback port; returns its base URL.
pub async fn serve(app: Router) -> String {
    // A queue of 1,024 connections not yet accepted (`bind`'s is 128): a burst of
    // 300 clients would otherwise see some connections dropped and retried a
    // second later.
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind a loopback port");
    let listener = socket.listen(1_024).expect("listen");
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("test server");
    });
    format!("http://{addr}")
}

/// The `Set-Cookie` headers of a response.
pub fn set_cookies(res: &reqwest::Response) -> Vec<String> {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// The `name=value` part of the only `Set-Cookie` header of a response.
pub fn cookie_pair(res: &reqwest::Response) -> String {
    let all = set_cookies(res);
    assert_eq!(all.len(), 1, "expected one Set-Cookie, got {all:?}");
    all[0].split(';').next().unwrap().to_owned()
}

/// Opens a v1 cookie independently of the crate, from the documented format, and
/// returns its session id.
pub fn decode_sid(secret: &[u8], value: &str) -> Vec<u8> {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let sealed = URL_SAFE_NO_PAD.decode(value).unwrap();
    let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"tower-sealed-sessions"), secret);
    let mut key = [0u8; 32];
    hkdf.expand(b"tower-sealed-sessions v1 cookie key", &mut key)
        .unwrap();
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).unwrap();
    let mut aad = sealed[..17].to_vec();
    aad.extend_from_slice(b"id");
    let plaintext = cipher
        .decrypt(
            aes_gcm::Nonce::from_slice(&sealed[5..17]),
            Payload {
                msg: &sealed[17..],
                aad: &aad,
            },
        )
        .expect("the documented format opens");
    assert_eq!(plaintext.len(), 65);
    plaintext[..16].to_vec()
}

/// Sends one request to `app` (as `oneshot`), with `headers`.
pub async fn oneshot(
    app: &Router,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> http::Response<axum::body::Body> {
    use tower::ServiceExt;
    let mut request = http::Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    app.clone()
        .oneshot(request.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap()
}

/// The `name=value` of a response's (first) `Set-Cookie`, if it has one.
pub fn set_cookie_pair(res: &http::Response<axum::body::Body>) -> Option<String> {
    let set = res.headers().get(http::header::SET_COOKIE)?.to_str().ok()?;
    Some(set.split(';').next()?.to_owned())
}
