//! Logs name sessions by fingerprint only: not one line at any level, on any of
//! the crate's targets, carries a store key, even on the paths that warn about a
//! record (corrupt, rejected, or rejected while rebasing a concurrent write).
//! And no message, `Debug` or log line (of any crate) shows a password written
//! into a store's URL. Alone in its binary, because it installs the global
//! tracing subscriber.

mod common;

use serde_json::{Value, json};
use std::time::Duration;
use tower_sealed_sessions::store::{CompareAndSet, Record, SessionStore, StoreKey};

#[cfg(feature = "postgres")]
use tower_sealed_sessions::PostgresStore;
#[cfg(feature = "redis")]
use tower_sealed_sessions::RedisStore;
use tower_sealed_sessions::{Fingerprint, Keys, SessionLayer};

use common::{Captured, TestStore, cookie_pair, kv_routes, serve};

/// Every event of every crate, at every level, for the whole binary.
fn captured() -> &'static Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| Captured::install("trace"))
}

/// The one record of the store that is not in `known`.
fn newest(store: &TestStore, known: &[String]) -> (String, Record) {
    let mut fresh: Vec<_> = store
        .inner
        .dump()
        .into_iter()
        .filter(|(key, _)| !known.contains(&key.to_string()))
        .collect();
    assert_eq!(fresh.len(), 1, "one new record");
    let (key, record) = fresh.pop().unwrap();
    (key.to_string(), record)
}

/// The store key whose hex is `hex`.
fn key_of(store: &TestStore, hex: &str) -> StoreKey {
    store
        .inner
        .dump()
        .into_iter()
        .find(|(k, _)| k.to_string() == hex)
        .unwrap()
        .0
}

#[tokio::test]
async fn no_log_line_carries_a_store_key() {
    let captured = captured();

    let store = TestStore::default();
    let layer = SessionLayer::new(store.clone(), Keys::generate()).with_secure(false);
    let base = serve(kv_routes().layer(layer)).await;
    let client = reqwest::Client::new();
    let post = |cookie: &str, path: &str| {
        client
            .post(format!("{base}{path}"))
            .header("cookie", cookie)
            .send()
    };
    let get = |cookie: &str, path: &str| {
        client
            .get(format!("{base}{path}"))
            .header("cookie", cookie)
            .send()
    };

    let mut keys: Vec<String> = Vec::new();
    let a = cookie_pair(&post("", "/set/who/a").await.unwrap());
    let (key_a, record_a) = newest(&store, &keys);
    keys.push(key_a.clone());
    let key_of_corrupt = key_of(&store, &key_a);
    let b = cookie_pair(&post("", "/set/who/b").await.unwrap());
    let (key_b, record_b) = newest(&store, &keys);
    keys.push(key_b.clone());

    // A value the store cannot decode.
    store.set_corrupt_loads(true);
    let res = get(&a, "/get/who").await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), Value::Null);
    store.set_corrupt_loads(false);
    let a = cookie_pair(&post("", "/set/who/a").await.unwrap());
    let (key_a, _) = newest(&store, &keys);
    keys.push(key_a.clone());

    // B's record copied under A's key: it does not open with A's cookie.
    let store_key_a = key_of(&store, &key_a);
    let key_of_swapped = store_key_a;
    let original_a = store.inner.load(&store_key_a).await.unwrap().unwrap();
    let planted = Record::new(
        original_a.version + 1,
        record_b.deadlines,
        record_b.data.clone(),
    );
    let swapped = store
        .inner
        .update(&store_key_a, &planted, original_a.version)
        .await
        .unwrap();
    assert!(matches!(swapped, CompareAndSet::Done));
    let res = get(&a, "/get/who").await.unwrap();
    assert_eq!(res.json::<Value>().await.unwrap(), Value::Null);
    assert_eq!(
        get(&b, "/get/who")
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap(),
        json!("b"),
        "B is untouched"
    );

    // A write to A whose compare-and-set meets a foreign record written meanwhile.
    let a = cookie_pair(&post("", "/set/who/a").await.unwrap());
    let (key_a, _) = newest(&store, &keys);
    keys.push(key_a.clone());
    let store_key_a = key_of(&store, &key_a);
    let key_of_rebased = store_key_a;
    let gate = store.pause_before("update");
    let write = tokio::spawn(
        client
            .post(format!("{base}/set/who/a2"))
            .header("cookie", a.clone())
            .send(),
    );
    gate.reached.notified().await;
    let current = store.inner.load(&store_key_a).await.unwrap().unwrap();
    let planted = Record::new(
        current.version + 1,
        record_a.deadlines,
        record_a.data.clone(),
    );
    store
        .inner
        .update(&store_key_a, &planted, current.version)
        .await
        .unwrap();
    gate.release.notify_one();
    let res = write.await.unwrap().unwrap();
    assert_eq!(
        res.status(),
        503,
        "the write is not saved over a record it cannot open"
    );

    let logs = captured.text();
    for warning in [
        "session record corrupt",
        "session record rejected",
        "concurrently written record rejected",
    ] {
        assert!(logs.contains(warning), "{warning:?} not logged:\n{logs}");
    }
    for key in &keys {
        assert!(
            !logs.contains(key.as_str()),
            "store key {key} in the logs:\n{logs}"
        );
    }
    for key in [&key_of_corrupt, &key_of_swapped, &key_of_rebased] {
        let fingerprint = Fingerprint::of(key).to_string();
        assert!(
            logs.contains(&fingerprint),
            "{fingerprint} not in the logs:\n{logs}"
        );
    }
}

/// A password no message may show.
const CANARY: &str = "Canary-Pw-7391";

/// A PostgreSQL URL with the canary in every place one can carry a password
/// (on a loopback port nothing listens on, so that connecting fails at once).
fn postgres_urls() -> Vec<String> {
    let at = "127.0.0.1:1";
    [
        format!("postgres://u:{CANARY}@{at}/db"),
        format!("postgres://u@{at}/db?password={CANARY}"),
        format!("postgres://u@{at}/db?PASSWORD={CANARY}"),
        format!("postgres://u@{at}/db?sslmode=disable&Password={CANARY}"),
        format!("postgres://u@{at}/db?pass%77ord={CANARY}"),
        format!("postgres://u@{at}/db?sslpassword={CANARY}"),
        format!("postgresql://u@{at}/db#{CANARY}"),
        format!("u:{CANARY}@{at}/db"),
        format!("postgress://u:{CANARY}@{at}/db?password={CANARY}"),
    ]
    .into()
}

/// The same for Redis.
fn redis_urls() -> Vec<String> {
    let at = "127.0.0.1:1";
    [
        format!("redis://u:{CANARY}@{at}/0"),
        format!("redis://:{CANARY}@{at}"),
        format!("rediss://{at}?password={CANARY}"),
        format!("redis://{at}/0#{CANARY}"),
        format!("u:{CANARY}@{at}/0"),
        format!("reddis://u:{CANARY}@{at}/0?password={CANARY}"),
    ]
    .into()
}

/// An error's text, its `Debug` and every cause's text.
fn described(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{err} | {err:?}");
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(" | {cause} | {cause:?}"));
        source = cause.source();
    }
    text
}

/// A store URL's password shows nowhere: not in the settings' `Debug`, nor in
/// the error of validating them, of connecting with them (`from_settings`) or
/// of building a layer from a configuration file that holds them, nor in the
/// configuration's `Debug`, nor in any log line of any crate meanwhile.
#[tokio::test]
async fn no_message_or_log_line_shows_a_store_url_password() {
    use tower_sealed_sessions::SessionConfig;
    use tower_sealed_sessions::config::{PostgresSettings, RedisSettings};
    let captured = captured();
    let logged_before = captured.text().len();
    let secret = "base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz";
    // (what was looked at, its text)
    let mut seen: Vec<(String, String)> = Vec::new();
    let wait = std::time::Duration::from_secs(20);
    for (kind, urls) in [("postgres", postgres_urls()), ("redis", redis_urls())] {
        for url in urls {
            let mut look = |what: &str, text: String| seen.push((format!("{what} of {url}"), text));
            let yaml = format!(
                "secret: \"{secret}\"\nstore: {{ type: {kind}, url: \"{url}\", timeout: 1s }}\n"
            );
            let config: SessionConfig = serde_yaml_ng::from_str(&yaml).expect("parses");
            look("the configuration's Debug", format!("{config:?}"));
            match tokio::time::timeout(wait, config.build()).await {
                Ok(Ok(_)) => panic!("{url}: a layer was built"),
                Ok(Err(err)) => look("the build error", described(&err)),
                Err(_) => panic!("{url}: building did not end within {wait:?}"),
            }
            if kind == "postgres" {
                let settings = PostgresSettings::url(&url).with_timeout(Duration::from_secs(1));
                look("the settings' Debug", format!("{settings:?}"));
                if let Err(err) = settings.validate() {
                    look("the validate error", described(&err));
                }
                #[cfg(feature = "postgres")]
                match tokio::time::timeout(wait, PostgresStore::from_settings(&settings)).await {
                    Ok(Ok(_)) => panic!("{url}: connected"),
                    Ok(Err(err)) => look("the connect error", described(&err)),
                    Err(_) => panic!("{url}: connecting did not end within {wait:?}"),
                }
            } else {
                let settings = RedisSettings::url(&url).with_timeout(Duration::from_secs(1));
                look("the settings' Debug", format!("{settings:?}"));
                if let Err(err) = settings.validate() {
                    look("the validate error", described(&err));
                }
                #[cfg(feature = "redis")]
                match tokio::time::timeout(wait, RedisStore::from_settings(&settings)).await {
                    Ok(Ok(_)) => panic!("{url}: connected"),
                    Ok(Err(err)) => look("the connect error", described(&err)),
                    Err(_) => panic!("{url}: connecting did not end within {wait:?}"),
                }
            }
        }
    }
    // Whatever tasks the failed connections left behind have had their say.
    tokio::time::sleep(Duration::from_millis(200)).await;
    seen.push((
        "the log".into(),
        captured.text()[logged_before..].to_owned(),
    ));
    let shown: Vec<&(String, String)> = seen.iter().filter(|(_, t)| t.contains(CANARY)).collect();
    let places: Vec<&str> = shown.iter().map(|(what, _)| what.as_str()).collect();
    assert!(
        shown.is_empty(),
        "{} of {} texts show the password: {places:#?}\nthe first: {}",
        shown.len(),
        seen.len(),
        shown.first().map_or("", |(_, text)| text.as_str()),
    );

    // What an operator needs stays: scheme, user, host, port, database and
    // the harmless parameters.
    let url = format!(
        "postgres://app:{CANARY}@db.internal:5433/app?sslmode=require&application_name=web&password={CANARY}"
    );
    let shown = format!("{:?}", PostgresSettings::url(&url));
    assert!(
        shown.contains(
            "postgres://app:<redacted>@db.internal:5433/app?sslmode=require&application_name=web\
             &password=<redacted>"
        ),
        "{shown}"
    );
    let shown = format!(
        "{:?}",
        RedisSettings::url(format!("rediss://u:{CANARY}@cache:6380/2"))
    );
    assert!(
        shown.contains("rediss://u:<redacted>@cache:6380/2"),
        "{shown}"
    );
}
