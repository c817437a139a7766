//! The store behind a `dyn` ([`DynStore`]), so that neither the layer nor the
//! service carries the store's type; and how each step of a request's store work
//! is started: on the spot for an [`IMMEDIATE`](SessionStore::IMMEDIATE) store,
//! boxed to be awaited for any other.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use super::persist;
use super::queue::WriteQueue;
use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::open::{Outcome, RecordSource};
use crate::plan::{Plan, TokenChange};
use crate::record::{Record, StoreKey};
use crate::settings::Settings;
use crate::store::{BoxFuture, SessionStore, StoreHealth};

/// The store as the request flow uses it: one step to load a session's record
/// (as a [`RecordSource`], which a session loaded on first use keeps), one to
/// carry out the plan its request ends with.
pub(crate) trait DynStore: RecordSource {
    /// Whether the store is [`IMMEDIATE`](SessionStore::IMMEDIATE).
    fn immediate(&self) -> bool;
    fn persist(&self, settings: &Arc<Settings>, plan: Plan, now: Timestamp)
    -> Outcome<TokenChange>;
    /// Whether the store answers, for a health check.
    fn ping(&self) -> BoxFuture<Result<StoreHealth, StoreError>>;
}

/// A store shared by the layer and every in-flight future, with the queue of its
/// writes in this process.
pub(crate) struct Erased<St> {
    store: Arc<St>,
    writes: Arc<WriteQueue>,
}

impl<St> Erased<St> {
    pub(crate) fn new(store: Arc<St>) -> Self {
        Erased {
            store,
            writes: Arc::default(),
        }
    }
}

/// Starts one step of a request's store work: `$step`, a future made from the
/// store (`$store`, a `&St`), its write queue (`$writes`, a `&WriteQueue`) and the
/// settings (`$settings`, a `&Settings`). For an immediate store it runs on the
/// spot, borrowing them: no `Arc` is cloned and the step's future is built where
/// it runs. Otherwise it is boxed, with its own `Arc`s of them, to be awaited.
macro_rules! start {
    ($erased:expr, $arc:expr, |$store:ident, $writes:ident, $settings:ident| $step:expr) => {
        if St::IMMEDIATE {
            let $store = &*$erased.store;
            let $writes: &WriteQueue = &$erased.writes;
            let $settings: &Settings = $arc;
            Outcome::Done(run_now($step))
        } else {
            let store = $erased.store.clone();
            let writes = $erased.writes.clone();
            let settings = $arc.clone();
            Outcome::Later(Box::pin(async move {
                let $store = &*store;
                let $writes: &WriteQueue = &writes;
                let $settings: &Settings = &settings;
                $step.await
            }))
        }
    };
}

/// Runs the future of an [`IMMEDIATE`](SessionStore::IMMEDIATE) store to its end,
/// here and now: on the stack, with no waker to wake.
pub(super) fn run_now<T>(
    future: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => Err(StoreError::backend(
            "a store declared IMMEDIATE returned a future that was not ready; the operation was dropped",
        )),
    }
}

impl<St: SessionStore> RecordSource for Erased<St> {
    fn load(&self, key: StoreKey) -> Outcome<Option<Record>> {
        if St::IMMEDIATE {
            return Outcome::Done(run_now(self.store.load(&key)));
        }
        // A record the store has at hand (its cache) is served on the spot.
        if let Some(hit) = self.store.load_now(&key) {
            return Outcome::Done(Ok(Some(hit)));
        }
        let store = self.store.clone();
        Outcome::Later(Box::pin(async move { store.load(&key).await }))
    }
}

impl<St: SessionStore> DynStore for Erased<St> {
    fn immediate(&self) -> bool {
        St::IMMEDIATE
    }

    fn ping(&self) -> BoxFuture<Result<StoreHealth, StoreError>> {
        let store = self.store.clone();
        Box::pin(async move { store.ping().await })
    }

    /// Each plan is its own future, the size its own steps need. One future for
    /// every plan would be as large as the largest (a move to a new id, about
    /// 3 KB), and every touch and write would pay for allocating or copying that;
    /// for the same reason, a write's steps borrow the plan rather than take it,
    /// and their rare steps (a login's limit check) are boxed.
    fn persist(
        &self,
        settings: &Arc<Settings>,
        plan: Plan,
        now: Timestamp,
    ) -> Outcome<TokenChange> {
        match plan {
            Plan::Touch {
                store_key,
                deadlines,
                version,
            } => start!(self, settings, |store, _writes, _settings| persist::touch(
                store, store_key, deadlines, version
            )),
            Plan::Create { data, meta } => start!(self, settings, |store, _writes, settings| {
                persist::create(store, settings, now, &data, meta)
            }),
            Plan::DestroyAll { store_keys } => {
                start!(self, settings, |store, _writes, _settings| {
                    persist::destroy_all(store, &store_keys)
                })
            }
            Plan::Destroy {
                store_key,
                user,
                then_create,
            } => start!(self, settings, |store, _writes, settings| persist::destroy(
                store,
                settings,
                now,
                store_key,
                user,
                then_create
            )),
            Plan::Update { edit, data } => start!(self, settings, |store, writes, settings| {
                persist::update(store, writes, settings, now, &edit, data)
            }),
            Plan::Move(edit) => start!(self, settings, |store, _writes, settings| {
                persist::move_session(store, settings, now, &edit)
            }),
        }
    }
}
