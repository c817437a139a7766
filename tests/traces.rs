//! Traces: a `session_store` span per store operation (operation, store kind,
//! outcome, never an id), and audit events with an `outcome` and the user's
//! tag fingerprint (never the user id), as a subscriber sees them.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use tower_sealed_sessions::{Keys, MemoryStore, Session, SessionLayer};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// What was seen: spans (name, target, fields, kept up to date as recorded) and
/// events (target, fields).
#[derive(Clone, Default)]
struct Seen {
    spans: Arc<Mutex<BTreeMap<u64, SeenSpan>>>,
    events: Arc<Mutex<Vec<(String, Fields)>>>,
}

type Fields = BTreeMap<String, String>;

/// A span's name, target and fields.
type SeenSpan = (String, String, Fields);

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Seen {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut Collect(&mut fields));
        let meta = attrs.metadata();
        self.spans.lock().unwrap().insert(
            id.into_u64(),
            (meta.name().to_owned(), meta.target().to_owned(), fields),
        );
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some((_, _, fields)) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Collect(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut Collect(&mut fields));
        self.events
            .lock()
            .unwrap()
            .push((event.metadata().target().to_owned(), fields));
    }
}

async fn call(
    app: &Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
) -> http::Response<Body> {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    common::oneshot(app, method, path, &headers).await
}

fn cookie(res: &http::Response<Body>) -> String {
    common::set_cookie_pair(res).expect("a Set-Cookie")
}

#[tokio::test(flavor = "current_thread")]
async fn store_operations_are_spans_and_audit_events_name_the_user_by_tag() {
    let seen = Seen::default();
    let subscriber = tracing_subscriber::registry().with(seen.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let layer = SessionLayer::new(MemoryStore::default(), Keys::generate()).with_secure(false);
    let users = layer.users();
    let app = Router::new()
        .route(
            "/set",
            post(|s: Session| async move { s.insert("n", 1).unwrap() }),
        )
        .route(
            "/get",
            get(|s: Session| async move { format!("{:?}", s.get::<u8>("n").unwrap()) }),
        )
        .route(
            "/login",
            post(|s: Session| async move {
                s.cycle_id();
                s.set_user_id("ada@example.com");
            }),
        )
        .layer(layer);
    let first = cookie(&call(&app, "POST", "/set", None).await);
    call(&app, "GET", "/get", Some(&first)).await;
    let second = cookie(&call(&app, "POST", "/login", Some(&first)).await);
    call(&app, "GET", "/get", Some(&first)).await; // the old id: no record
    users.revoke_all("ada@example.com").await.unwrap();

    let spans: Vec<SeenSpan> = seen.spans.lock().unwrap().values().cloned().collect();
    let store_spans: Vec<&Fields> = spans
        .iter()
        .filter(|(name, target, _)| {
            name == "session_store" && target == "tower_sealed_sessions::store"
        })
        .map(|(_, _, fields)| fields)
        .collect();
    let ops: Vec<(&str, &str)> = store_spans
        .iter()
        .map(|f| (f["operation"].as_str(), f["outcome"].as_str()))
        .collect();
    assert!(ops.contains(&("create", "ok")), "{ops:?}");
    assert!(ops.contains(&("load", "ok")), "{ops:?}");
    assert!(
        ops.contains(&("load", "missing")),
        "the old id after the login: {ops:?}"
    );
    assert!(
        ops.contains(&("delete_version", "ok")),
        "the login's move: {ops:?}"
    );
    assert!(ops.contains(&("index_list", "ok")), "{ops:?}");
    for fields in &store_spans {
        assert_eq!(fields["store"], "memory");
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["operation", "outcome", "store"],
            "no other field: {fields:?}"
        );
    }

    let events = seen.events.lock().unwrap().clone();
    let audit: Vec<&Fields> = events
        .iter()
        .filter(|(target, _)| target == "tower_sealed_sessions::audit")
        .map(|(_, fields)| fields)
        .collect();
    let of =
        |event: &str| -> Vec<&&Fields> { audit.iter().filter(|f| f["event"] == event).collect() };
    assert!(audit.iter().all(|f| f.contains_key("outcome")), "{audit:?}");
    assert_eq!(of("created")[0]["outcome"], "success");
    assert_eq!(of("expired")[0]["outcome"], "failure");
    let cycled = of("cycled");
    let revoked = of("revoked");
    let user = &cycled[0]["user"];
    assert_eq!(user.len(), 16, "a fingerprint: {user}");
    assert_eq!(&revoked[0]["user"], user, "one user, one tag fingerprint");
    assert!(
        !of("created")[0].contains_key("user"),
        "an anonymous session names no user"
    );
    for (_, fields) in &events {
        for value in fields.values() {
            assert!(
                !value.contains("ada"),
                "the user id is never written: {fields:?}"
            );
        }
    }
    let _ = second;
}

/// With `store.cache`, a load's span says whether the cache answered.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "current_thread")]
async fn a_cached_load_says_hit_or_miss_on_its_span() {
    use std::time::Duration;
    use tower_sealed_sessions::RedisStore;
    use tower_sealed_sessions::config::RedisSettings;
    use tower_sealed_sessions::store::CacheSettings;
    if !common::redis::available() {
        return;
    }
    let server = common::redis::RedisServer::start();
    let seen = Seen::default();
    let subscriber = tracing_subscriber::registry().with(seen.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let settings = RedisSettings::url(server.url())
        .with_cache(CacheSettings::new(10, Duration::from_secs(60)));
    let keys = Keys::generate();
    let app = |store: RedisStore| {
        let layer = SessionLayer::new(store, keys.clone()).with_secure(false);
        Router::new()
            .route(
                "/set",
                post(|s: Session| async move { s.insert("n", 1).unwrap() }),
            )
            .route(
                "/get",
                get(|s: Session| async move { format!("{:?}", s.get::<u8>("n").unwrap()) }),
            )
            .layer(layer)
    };
    let a = app(RedisStore::from_settings(&settings).await.unwrap());
    let b = app(RedisStore::from_settings(&settings).await.unwrap());
    // Written by one process (no load: a new session), read twice by another.
    let first = cookie(&call(&a, "POST", "/set", None).await);
    call(&b, "GET", "/get", Some(&first)).await;
    call(&b, "GET", "/get", Some(&first)).await;
    let spans: Vec<SeenSpan> = seen.spans.lock().unwrap().values().cloned().collect();
    let loads: Vec<Option<String>> = spans
        .iter()
        .filter(|(name, _, fields)| name == "session_store" && fields["operation"] == "load")
        .map(|(_, _, fields)| fields.get("cache").cloned())
        .collect();
    assert_eq!(
        loads,
        vec![Some("miss".to_owned()), Some("hit".to_owned())],
        "{spans:?}"
    );
}
