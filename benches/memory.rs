//! Heap use, counted by a wrapping global allocator (so no timings here): heap
//! allocations per request for each kind of request, and live heap bytes per
//! stored session at 1,000 and at 1,000,000 sessions, created through the layer.
//!
//! ```text
//! cargo bench --bench memory
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use axum::Router;
use http::{HeaderValue, header};
use tower::ServiceExt;
use tower_sealed_sessions::{Keys, MemoryStore, SessionLayer};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the wrapper
// only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded with the caller's arguments.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

mod common;

use common::{request, routes};

async fn call(app: &Router, path: &str, cookie: Option<&HeaderValue>) -> Option<HeaderValue> {
    let res = app.clone().oneshot(request(path, cookie)).await.unwrap();
    let set = res.headers().get(header::SET_COOKIE)?.to_str().unwrap();
    Some(HeaderValue::from_str(set.split(';').next().unwrap()).unwrap())
}

/// Heap allocations per request, averaged over `n` requests after a warm-up.
async fn allocations(app: &Router, path: &str, cookie: Option<&HeaderValue>, n: usize) -> f64 {
    for _ in 0..100 {
        call(app, path, cookie).await;
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..n {
        call(app, path, cookie).await;
    }
    (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / n as f64
}

/// Live heap bytes per session after creating `n` sessions through the layer.
async fn bytes_per_session(n: usize) -> (f64, usize) {
    let store = MemoryStore::builder().max_sessions(n as u64 + 10).build();
    let app = routes()
        .layer(SessionLayer::new(store.clone(), Keys::generate()))
        .with_state(());
    let data_len = {
        call(&app, "/write", None).await;
        let len = store.dump()[0].1.data.len();
        store.len();
        len
    };
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for _ in 0..n {
        call(&app, "/write", None).await;
    }
    assert_eq!(store.len(), n as u64 + 1);
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    ((after - before) as f64 / n as f64, data_len)
}

fn main() {
    // `cargo bench` passes flags such as --bench; there is nothing to parse.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let bare = routes().with_state(());
        let layered = routes().layer(SessionLayer::new(MemoryStore::default(), Keys::generate())).with_state(());
        let cookie = call(&layered, "/write", None).await.unwrap();
        let n = 10_000;
        println!("heap allocations per request (mean of {n}):");
        let cases: [(&str, &Router, &str, Option<&HeaderValue>); 6] = [
            ("bare router", &bare, "/plain", None),
            ("layer, no cookie", &layered, "/plain", None),
            ("layer, new session", &layered, "/write", None),
            ("layer, read-only", &layered, "/read", Some(&cookie)),
            ("layer, read+write", &layered, "/write", Some(&cookie)),
            ("layer, no cookie, reads", &layered, "/read", None),
        ];
        for (name, app, path, cookie) in cases {
            println!("  {name:<26} {:>6.1}", allocations(app, path, cookie, n).await);
        }
        println!("live heap bytes per stored session (sealed data included):");
        for sessions in [1_000, 1_000_000] {
            let (bytes, data) = bytes_per_session(sessions).await;
            println!(
                "  {sessions:>9} sessions: {bytes:>7.1} bytes each, {:.1} beyond the {data}-byte sealed data",
                bytes - data as f64
            );
        }
    });
}
