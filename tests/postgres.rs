//! `PostgresStore` against the PostgreSQL server on 127.0.0.1:5432 (`test`
//! database, trust auth; `POSTGRES_URL` names another). Each test gets tables of
//! its own (a random prefix), dropped when it ends. Without the server the tests
//! fail when `CI` is set, and otherwise skip with a printed reason.
#![cfg(feature = "postgres")]

use tower_sealed_sessions::store::PostgresStore;

fn url() -> String {
    std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

/// Tables of one test's own, dropped with it.
struct Tables {
    url: String,
    prefix: String,
}

impl Drop for Tables {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        // A runtime of its own: the test's may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                    for table in ["records", "user_index", "schema"] {
                        let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {prefix}{table}"))
                            .execute(&pool)
                            .await;
                    }
                }
            });
        })
        .join();
    }
}

async fn fixture() -> Option<(PostgresStore, Tables)> {
    let url = url();
    let pool = match sqlx::PgPool::connect(&url).await {
        Ok(pool) => pool,
        Err(err) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but PostgreSQL is not reachable at {url}: {err}"
            );
            eprintln!("skipped: no PostgreSQL at {url}: {err}");
            return None;
        }
    };
    let prefix = format!("tss_{:016x}_", rand::random::<u64>());
    let store = PostgresStore::from_pool(pool, &prefix).await.unwrap();
    Some((store, Tables { url, prefix }))
}

mod conformance {
    use super::*;

    tower_sealed_sessions::store_conformance_tests!(fixture());
}

/// The cleanup deletes every expired record, in batches of 1,000, and nothing
/// else; expired index entries go with them.
#[tokio::test]
async fn cleanup_deletes_expired_rows_in_batches_and_nothing_else() {
    use tower_sealed_sessions::store::{
        Deadlines, IndexEntry, Record, SessionStore, StoreKey, Timestamp, UserTag,
    };
    let Some((store, _tables)) = fixture().await else {
        return;
    };
    let now = Timestamp::from_unix_millis(
        u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    );
    let record = |expires: Timestamp| {
        let deadlines = Deadlines {
            idle: expires,
            lifespan: expires,
            active: now,
        };
        Record::new(1, deadlines, bytes::Bytes::from_static(b"sealed"))
    };
    let past = Timestamp::from_unix_millis(now.unix_millis() - 60_000);
    let future = now.saturating_add(std::time::Duration::from_secs(3600));
    // Expired rows cannot be created through the store (a create replaces an
    // expired row), so they are created live and then expire by the clock the
    // cleanup is given.
    let keys: Vec<StoreKey> = (0..2_503)
        .map(|_| StoreKey::from_bytes(rand::random()))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        let expires = if i < 3 {
            future.saturating_add(std::time::Duration::from_secs(3600))
        } else {
            future
        };
        assert!(store.create(key, &record(expires)).await.unwrap());
    }
    let user = UserTag::from_bytes(rand::random());
    let entry = IndexEntry::new(keys[10], past, future, past, false);
    store.index_add(&user, &entry).await.unwrap();
    let later = future.saturating_add(std::time::Duration::from_secs(1));
    assert_eq!(store.delete_expired(later).await.unwrap(), 2_500);
    for key in &keys[..3] {
        assert!(store.load(key).await.unwrap().is_some(), "live rows stay");
    }
    assert!(store.load(&keys[3]).await.unwrap().is_none());
    assert!(
        store.index_list(&user, now).await.unwrap().is_empty(),
        "the expired index entry went too"
    );
    assert_eq!(store.delete_expired(later).await.unwrap(), 0);
}

/// The `store:` section builds the store, and a login outlives the process that
/// made it: a second store and layer, built from the same file, open its cookie.
#[tokio::test]
async fn a_file_configured_store_keeps_a_login_across_a_restart() {
    use axum::Router;
    use axum::routing::{get, post};
    use tower::ServiceExt;
    use tower_sealed_sessions::config::StoreConfig;
    use tower_sealed_sessions::{Session, SessionConfig, SessionLayer};

    let Some((_, tables)) = fixture().await else {
        return;
    };
    let yaml = format!(
        "secret: \"base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz\"\n\
         cookie: {{ secure: false }}\n\
         store: {{ type: postgres, url: \"{}\", table_prefix: \"{}\" }}",
        tables.url, tables.prefix
    );
    let config: SessionConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    let app = || async {
        let StoreConfig::Postgres(settings) = config.store() else {
            panic!("a postgres section")
        };
        let store = PostgresStore::from_settings(settings).await.unwrap();
        Router::new()
            .route(
                "/login",
                post(|s: Session| async move {
                    s.cycle_id();
                    s.set_user_id("ada");
                }),
            )
            .route(
                "/me",
                get(|s: Session| async move { s.user_id().unwrap_or_default() }),
            )
            .layer(SessionLayer::from_config(&config, store).unwrap())
    };
    let request = |method: &str, path: &str, cookie: Option<&str>| {
        let mut req = http::Request::builder().method(method).uri(path);
        if let Some(cookie) = cookie {
            req = req.header(http::header::COOKIE, cookie);
        }
        req.body(axum::body::Body::empty()).unwrap()
    };
    let first = app().await;
    let res = first
        .oneshot(request("POST", "/login", None))
        .await
        .unwrap();
    let cookie = res.headers()[http::header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let second = app().await;
    let res = second
        .oneshot(request("GET", "/me", Some(&cookie)))
        .await
        .unwrap();
    let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], b"ada", "the login outlived the first store");
}

/// A password reference that cannot be read fails the connection, naming it.
#[tokio::test]
async fn an_unreadable_password_reference_is_named() {
    use tower_sealed_sessions::config::PostgresSettings;
    let settings = PostgresSettings::url(url()).with_password("env:TSS_TEST_UNSET_PASSWORD");
    let err = PostgresStore::from_settings(&settings).await.unwrap_err();
    assert!(err.to_string().contains("store.password"), "{err}");
}

/// Creating the schema again changes nothing; a schema newer than this release
/// knows is refused rather than written to.
#[tokio::test]
async fn the_schema_is_created_once_and_a_newer_one_is_refused() {
    let Some((_, tables)) = fixture().await else {
        return;
    };
    let pool = sqlx::PgPool::connect(&tables.url).await.unwrap();
    PostgresStore::from_pool(pool.clone(), &tables.prefix)
        .await
        .expect("a second start finds the schema");
    let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}schema", tables.prefix))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "one version row, however many starts");
    sqlx::query(&format!("UPDATE {}schema SET version = 99", tables.prefix))
        .execute(&pool)
        .await
        .unwrap();
    let err = PostgresStore::from_pool(pool, &tables.prefix)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}
