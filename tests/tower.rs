//! The layer on bare tower services: generic bodies, readiness, errors, auto traits.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_sealed_sessions::service::SessionService;
use tower_sealed_sessions::{Keys, MemoryStore, Session, SessionLayer};

fn layer() -> SessionLayer {
    SessionLayer::new(MemoryStore::default(), Keys::generate())
}

fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
fn assert_send<T: Send>(_: &T) {}

#[tokio::test]
async fn wraps_a_bare_service_fn_with_its_own_body_types() {
    let svc = layer().layer(service_fn(|req: Request<Vec<u8>>| async move {
        let session = req.extensions().get::<Session>().cloned().unwrap();
        session.load().await.unwrap();
        session.insert("len", req.body().len()).unwrap();
        Ok::<_, Infallible>(Response::new(format!("{} bytes", req.body().len())))
    }));
    let res = svc
        .clone()
        .oneshot(Request::new(vec![1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(res.body(), "3 bytes");
    let cookie = res.headers()[header::SET_COOKIE].to_str().unwrap();
    let pair = cookie.split(';').next().unwrap().to_owned();

    let check = layer().layer(service_fn(|req: Request<()>| async move {
        let session = req.extensions().get::<Session>().unwrap();
        session.load().await.unwrap();
        let n: Option<usize> = session.get("len").unwrap();
        Ok::<_, Infallible>(Response::new(n))
    }));
    // A cookie from another layer's keys opens no session there.
    let mut req = Request::new(());
    req.headers_mut()
        .insert(header::COOKIE, HeaderValue::from_str(&pair).unwrap());
    assert_eq!(check.oneshot(req).await.unwrap().into_body(), None);
}

#[test]
fn a_wrapped_service_shows_what_it_wraps_and_never_the_keys() {
    #[derive(Clone, Debug)]
    struct Inner;
    let shown = format!("{:?}", layer().layer(Inner));
    assert!(
        shown.starts_with("SessionService { inner: Inner"),
        "{shown}"
    );
    assert!(!shown.contains("Keys"), "{shown}");
}

#[tokio::test]
async fn the_inner_error_type_passes_through_unchanged() {
    #[derive(Debug, PartialEq)]
    struct Oops;
    let svc = layer().layer(service_fn(|_: Request<()>| async {
        Err::<Response<()>, _>(Oops)
    }));
    assert_eq!(svc.oneshot(Request::new(())).await.unwrap_err(), Oops);
}

#[derive(Clone)]
struct Gated {
    open: Arc<AtomicBool>,
}

impl Service<Request<()>> for Gated {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.open.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        assert!(
            self.open.load(Ordering::SeqCst),
            "called without being ready"
        );
        std::future::ready(Ok(Response::new(())))
    }
}

#[tokio::test]
async fn readiness_is_the_inner_services() {
    let open = Arc::new(AtomicBool::new(false));
    let mut svc = layer().layer(Gated { open: open.clone() });
    let waker = futures_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(svc.poll_ready(&mut cx).is_pending());
    open.store(true, Ordering::SeqCst);
    assert!(svc.poll_ready(&mut cx).is_ready());
    let res = svc.call(Request::new(())).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

fn futures_waker() -> std::task::Waker {
    struct Noop;
    impl std::task::Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    std::task::Waker::from(Arc::new(Noop))
}

#[tokio::test]
async fn service_and_future_are_send_and_the_service_is_clone() {
    type Svc =
        SessionService<tower::util::BoxCloneSyncService<Request<()>, Response<()>, Infallible>>;
    assert_send_sync_clone::<Svc>();
    assert_send_sync_clone::<SessionLayer>();
    assert_send_sync_clone::<Session>();
    let mut svc = layer().layer(service_fn(|req: Request<()>| async move {
        // Loading opens the token, which is refused, and cleared on the response.
        let session = req.extensions().get::<Session>().unwrap();
        session.load().await.unwrap();
        Ok::<_, Infallible>(Response::new(()))
    }));
    let mut req = Request::new(());
    req.headers_mut()
        .insert(header::COOKIE, HeaderValue::from_static("id=not-a-session"));
    let fut = svc.ready().await.unwrap().call(req);
    assert_send(&fut);
    let res = fut.await.unwrap();
    assert!(
        res.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

#[tokio::test]
async fn a_grpc_error_status_saves_nothing() {
    let store = MemoryStore::default();
    let svc = SessionLayer::new(store.clone(), Keys::generate()).layer(service_fn(
        |req: Request<()>| async move {
            let session = req.extensions().get::<Session>().unwrap();
            session.load().await.unwrap();
            session.insert("half-done", true).unwrap();
            // A trailers-only gRPC error (INTERNAL), as tonic sends for Err(Status).
            let mut res = Response::new(());
            res.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/grpc"));
            res.headers_mut()
                .insert("grpc-status", HeaderValue::from_static("13"));
            Ok::<_, Infallible>(res)
        },
    ));
    let res = svc.oneshot(Request::new(())).await.unwrap();
    assert!(!res.headers().contains_key(header::SET_COOKIE));
    assert!(store.is_empty(), "nothing written for a failed call");
}

/// A plain tower service loads its session before using it. One that does not is
/// refused (`NotLoaded`) and changes nothing, not even a logout; with eager loads
/// the layer loads every session first.
#[tokio::test]
async fn a_plain_service_loads_its_session_before_using_it() {
    let store = MemoryStore::default();
    let keys = Keys::generate();
    let writer = SessionLayer::new(store.clone(), keys.clone()).layer(service_fn(
        |req: Request<()>| async move {
            let session = req.extensions().get::<Session>().cloned().unwrap();
            session.load().await.unwrap();
            session.load().await.unwrap(); // a second load does nothing
            session.insert("n", 1).unwrap();
            Ok::<_, Infallible>(Response::new(()))
        },
    ));
    let res = writer.oneshot(Request::new(())).await.unwrap();
    let set = res.headers()[header::SET_COOKIE].to_str().unwrap();
    let cookie = set.split(';').next().unwrap().to_owned();
    assert_eq!(store.len(), 1);

    let forgetful = |eager: bool| {
        SessionLayer::new(store.clone(), keys.clone())
            .with_eager_load(eager)
            .layer(service_fn(|req: Request<()>| async move {
                let session = req.extensions().get::<Session>().cloned().unwrap();
                let read = match session.get::<u64>("n") {
                    Ok(n) => format!("read {n:?}"),
                    Err(err) => err.to_string(),
                };
                session.destroy();
                Ok::<_, Infallible>(Response::new(read))
            }))
    };
    let request = || {
        let mut req = Request::new(());
        req.headers_mut()
            .insert(header::COOKIE, HeaderValue::from_str(&cookie).unwrap());
        req
    };
    let res = forgetful(false).oneshot(request()).await.unwrap();
    assert_eq!(
        res.body(),
        "the session is not loaded: call `Session::load().await` before using it"
    );
    assert!(!res.headers().contains_key(header::SET_COOKIE));
    assert_eq!(store.len(), 1, "the logout did not take");

    let res = forgetful(true).oneshot(request()).await.unwrap();
    assert_eq!(res.body(), "read Some(1)");
    assert!(
        res.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(store.len(), 0, "loaded by the layer: the logout took");
}
