//! Session data does not outlive its use in freed memory: an allocator that looks
//! into every block freed while a session carries a marker value finds the marker
//! in none of them, through a create, a read, a write and a logout. Alone in its
//! binary, because it installs the global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use http::{HeaderValue, Request, Response, header};
use tower::{Layer, ServiceExt, service_fn};
use tower_sealed_sessions::{Keys, MemoryStore, Session, SessionLayer};

/// The value the session carries; it appears nowhere else in the process's heap
/// (the handler inserts it from static memory).
const MARKER_TEXT: &str = "tss-hygiene-marker-7f3a9c51";
const MARKER: &[u8] = MARKER_TEXT.as_bytes();

/// The system allocator, which, while `WATCHING`, counts the blocks freed with
/// the marker still in them.
struct Watcher;

static WATCHING: AtomicBool = AtomicBool::new(false);
static FOUND: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Watcher {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if WATCHING.load(Ordering::Relaxed) && layout.size() >= MARKER.len() {
            // SAFETY: the block is still allocated, `layout.size()` bytes long.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            if block.windows(MARKER.len()).any(|w| w == MARKER) {
                FOUND.fetch_add(1, Ordering::Relaxed);
            }
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Watcher = Watcher;

fn marker() -> String {
    String::from_utf8(MARKER.to_vec()).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn session_data_is_wiped_before_it_is_freed() {
    // The watcher sees a marker freed as it is.
    WATCHING.store(true, Ordering::SeqCst);
    drop(std::hint::black_box(marker()));
    WATCHING.store(false, Ordering::SeqCst);
    assert_eq!(FOUND.swap(0, Ordering::SeqCst), 1, "the watcher works");

    let layer = SessionLayer::new(MemoryStore::default(), Keys::generate()).with_secure(false);
    let service = layer.layer(service_fn(|req: Request<&'static str>| async move {
        let session = req.extensions().get::<Session>().cloned().unwrap();
        session.load().await.unwrap();
        match *req.body() {
            "create" => session.insert("secret", MARKER_TEXT).unwrap(),
            "write" => session.insert("other", 1).unwrap(),
            "replace" => session.insert("secret", "plain").unwrap(),
            "logout" => session.destroy(),
            _ => {}
        }
        Ok::<_, Infallible>(Response::new(()))
    }));
    let send = |body: &'static str, cookie: Option<HeaderValue>| {
        let mut req = Request::new(body);
        if let Some(cookie) = cookie {
            req.headers_mut().insert(header::COOKIE, cookie);
        }
        service.clone().oneshot(req)
    };

    WATCHING.store(true, Ordering::SeqCst);
    let res = send("create", None).await.unwrap();
    let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
    let cookie = HeaderValue::from_str(set.split(';').next().unwrap()).unwrap();
    assert_eq!(
        FOUND.load(Ordering::SeqCst),
        0,
        "freed with the marker in it, at create"
    );
    for step in ["read", "write", "read", "replace", "create", "logout"] {
        send(step, Some(cookie.clone())).await.unwrap();
        assert_eq!(
            FOUND.load(Ordering::SeqCst),
            0,
            "freed with the marker in it, at {step}"
        );
    }
    WATCHING.store(false, Ordering::SeqCst);
}
