//! Helpers shared by the integration tests: a store that counts and fails on demand,
//! and a real loopback server.
#![allow(dead_code, unreachable_pub)]

pub mod conformance;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use tower_sealed_sessions::{
    Deadlines, MemoryStore, Record, SessionStore, StoreError, StoreKey, Timestamp, Update,
};

/// A memory store that records every operation and fails while told to.
#[derive(Clone, Default)]
pub struct TestStore {
    pub inner: MemoryStore,
    ops: Arc<Mutex<Vec<&'static str>>>,
    failing: Arc<AtomicBool>,
}

impl TestStore {
    pub fn new(inner: MemoryStore) -> Self {
        TestStore {
            inner,
            ..TestStore::default()
        }
    }

    /// The operations since the last call, in order.
    pub fn take_ops(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.ops.lock().unwrap())
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn enter(&self, op: &'static str) -> Result<(), StoreError> {
        self.ops.lock().unwrap().push(op);
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::backend(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "test store switched off",
            )))
        } else {
            Ok(())
        }
    }
}

impl SessionStore for TestStore {
    fn load(
        &self,
        key: &StoreKey,
    ) -> impl Future<Output = Result<Option<Record>, StoreError>> + Send {
        let entered = self.enter("load");
        let key = *key;
        async move {
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
        async move {
            entered?;
            self.inner.create(key, record).await
        }
    }

    fn update(
        &self,
        key: &StoreKey,
        record: &Record,
        expected_version: u64,
    ) -> impl Future<Output = Result<Update, StoreError>> + Send {
        let entered = self.enter("update");
        async move {
            entered?;
            self.inner.update(key, record, expected_version).await
        }
    }

    fn touch(
        &self,
        key: &StoreKey,
        deadlines: Deadlines,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let entered = self.enter("touch");
        async move {
            entered?;
            self.inner.touch(key, deadlines).await
        }
    }

    fn delete(&self, key: &StoreKey) -> impl Future<Output = Result<(), StoreError>> + Send {
        let entered = self.enter("delete");
        async move {
            entered?;
            self.inner.delete(key).await
        }
    }

    fn delete_expired(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let entered = self.enter("delete_expired");
        async move {
            entered?;
            self.inner.delete_expired(now).await
        }
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
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind a loopback port");
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
