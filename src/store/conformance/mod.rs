//! The store conformance suite (feature `test-util`): the behaviour every
//! [`SessionStore`] must show, one test per behaviour, through
//! [`store_conformance_tests!`](crate::store_conformance_tests).
//!
//! Each check gets a fresh [`Fixture`] and works on fresh random keys and users, so
//! a fixture may share one backend between tests. Deadlines are either far in the
//! future or already past: the suite needs no clock control, and runs the same
//! against stores with native expiry.

use std::future::Future;
use std::sync::Arc;

use proptest::test_runner::{Config, TestRunner};

use crate::store::SessionStore;

mod checks;
mod model;

pub use checks::*;

/// Writes one `#[test]` per behaviour of the conformance suite, each against a
/// fresh [`Fixture`] from `$fixture`: an expression, evaluated once per test, whose
/// value is a future of the fixture.
///
/// The fixture is the store itself; or `(store, guard)`, where the guard keeps
/// what the store needs (a server process, a temporary directory) alive until the
/// test ends; or an `Option` of either, `None` to skip the test (a backend that is
/// not configured here).
///
/// ```
/// mod memory_store {
///     use tower_sealed_sessions::MemoryStore;
///
///     tower_sealed_sessions::store_conformance_tests!(async { MemoryStore::default() });
/// }
/// ```
///
/// The tests run on a multi-threaded tokio runtime of their own, so the crate that
/// uses the macro needs neither tokio's macros nor proptest.
#[macro_export]
macro_rules! store_conformance_tests {
    ($fixture:expr) => {
        $crate::__conformance_checks!($fixture; index_add_list_and_remove, index_entries_expire_and_never_shrink_on_refresh, index_samples_are_bounded_and_vary, concurrent_index_adds_lose_nothing, create_load_and_refuse_existing, compare_and_set, touch_moves_deadlines_only, delete_is_idempotent, expired_records_are_not_live, delete_version_is_a_compare_and_delete, delete_is_never_undone_by_racing_writes, concurrent_compare_and_set_loses_nothing, batches_load_and_delete_exactly_their_keys);

        /// Random sequences of store operations, each result checked against a
        /// model of what a store must do.
        #[test]
        fn matches_the_model_under_random_operations() {
            $crate::store::conformance::run_model($fixture);
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_checks {
    ($fixture:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::store::conformance::run($fixture, $crate::store::conformance::$check);
            }
        )*
    };
}

/// What a conformance test runs against: a store; `(store, guard)`, the guard kept
/// alive until the test ends; or an `Option` of either, `None` to skip the test.
pub trait Fixture: Send + Sync + 'static {
    /// The store under test.
    type Store: SessionStore;

    /// The store, or `None` when the test is to be skipped.
    fn store(&self) -> Option<&Self::Store>;
}

impl<St: SessionStore> Fixture for St {
    type Store = St;

    fn store(&self) -> Option<&St> {
        Some(self)
    }
}

impl<St: SessionStore, G: Send + Sync + 'static> Fixture for (St, G) {
    type Store = St;

    fn store(&self) -> Option<&St> {
        Some(&self.0)
    }
}

impl<F: Fixture> Fixture for Option<F> {
    type Store = F::Store;

    fn store(&self) -> Option<&F::Store> {
        self.as_ref().and_then(Fixture::store)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the conformance suite")
}

/// Runs `check` against the fixture `make` yields, on a runtime of its own; prints
/// a line and passes when the fixture says to skip.
pub fn run<F, C, Fut>(make: impl Future<Output = F>, check: C)
where
    F: Fixture,
    C: FnOnce(Arc<F>) -> Fut,
    Fut: Future<Output = ()>,
{
    runtime().block_on(async {
        let fixture = Arc::new(make.await);
        if fixture.store().is_none() {
            println!("skipped: the fixture has no store here");
            return;
        }
        check(fixture).await;
    });
}

/// Runs the model check against the fixture `make` yields: random sequences of up
/// to 40 operations on a few keys, each result checked against a plain map.
pub fn run_model<F: Fixture>(make: impl Future<Output = F>) {
    let rt = runtime();
    let fixture = rt.block_on(make);
    let Some(store) = fixture.store() else {
        println!("skipped: the fixture has no store here");
        return;
    };
    let mut runner = TestRunner::new(Config {
        cases: 128,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(model::op(), 1..40);
    runner
        .run(&strategy, |ops| rt.block_on(model::run_ops(store, ops)))
        .unwrap();
}
