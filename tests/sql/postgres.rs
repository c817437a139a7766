//! `PostgresStore` against the PostgreSQL server on 127.0.0.1:5432 (`test`
//! database, trust auth; `POSTGRES_URL` names another). Each test gets tables of
//! its own (a random prefix), dropped when it ends. Without the server the tests
//! fail when `CI` is set, and otherwise skip with a printed reason.

use tower_sealed_sessions::store::PostgresStore;

use super::*;

pub(super) fn url() -> String {
    std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

/// Tables of one test's own, dropped with it.
pub(super) struct Tables {
    pub(super) url: String,
    pub(super) prefix: String,
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
                    let drop = format!("DROP FUNCTION IF EXISTS {prefix}notify()");
                    let _ = sqlx::query(&drop).execute(&pool).await;
                }
            });
        })
        .join();
    }
}

/// A new role that may only read and write `tables` (no CREATE), and the
/// admin URL with its name and password; drop it with `DROP OWNED BY`, then
/// `DROP ROLE`.
pub(super) async fn dml_role(admin: &sqlx::PgPool, tables: &Tables) -> (String, String) {
    let role = format!("tss_dml_{:08x}", rand::random::<u32>());
    let p = &tables.prefix;
    for statement in [
        format!("CREATE ROLE {role} LOGIN PASSWORD 'dml'"),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {p}records, {p}user_index, {p}schema TO {role}"
        ),
    ] {
        sqlx::query(&statement).execute(admin).await.unwrap();
    }
    let (scheme, rest) = tables.url.split_once("://").unwrap();
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let url = format!("{scheme}://{role}:dml@{host}");
    (role, url)
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

#[tokio::test]
async fn cleanup_deletes_expired_rows_in_batches_and_nothing_else() {
    let Some((store, _tables)) = fixture().await else {
        return;
    };
    super::cleanup_deletes_expired_rows_in_batches_and_nothing_else(&store).await;
}

/// The `store:` section builds the store, and a login outlives the process that
/// made it: a second store and layer, built from the same file, open its cookie.
#[tokio::test]
async fn a_file_configured_store_keeps_a_login_across_a_restart() {
    use tower_sealed_sessions::config::StoreConfig;
    let Some((_, tables)) = fixture().await else {
        return;
    };
    let yaml = format!(
        "secret: \"base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz\"\n\
         cookie: {{ secure: false }}\n\
         store: {{ type: postgres, url: \"{}\", table_prefix: \"{}\", timeout: 3s, pool_size: 2 }}",
        tables.url, tables.prefix
    );
    a_login_outlives_the_layer(&yaml, async |config: &SessionConfig| {
        let StoreConfig::Postgres(settings) = config.store() else {
            panic!("a postgres section")
        };
        PostgresStore::from_settings(settings).await.unwrap()
    })
    .await;
}

/// A read-only request is one query, a write one more (a compare-and-set that
/// reads the record it lost to in the same statement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_is_one_query_and_a_write_one_more() {
    let Some((store, tables)) = fixture().await else {
        return;
    };
    queries_per_request(store, &tables.prefix, "WITH").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_user_sessions_suite_and_lists_a_thousand_of_one_user() {
    let Some((store, _tables)) = fixture().await else {
        return;
    };
    user_sessions(store, "postgres").await;
}

/// A hundred writers of one session, half setting keys, half incrementing a
/// counter, within the default write deadline: they take turns in the process,
/// one compare-and-set each, and none is refused or lost. Then two processes
/// (two layers, each with its own pool and queue) of 50 writers each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_writers_of_one_session_are_all_answered_and_lose_nothing() {
    let Some((store, tables)) = fixture().await else {
        return;
    };
    let base = serve(app(store, |l| l)).await;
    let cookie = common::concurrent_writers(std::slice::from_ref(&base), 100).await;
    common::check_writers(&base, &cookie, 100).await;
    let second =
        PostgresStore::from_pool(sqlx::PgPool::connect(&url()).await.unwrap(), &tables.prefix)
            .await
            .unwrap();
    let bases = [base, serve(app(second, |l| l)).await];
    let cookie = common::concurrent_writers(&bases, 100).await;
    common::check_writers(&bases[1], &cookie, 100).await;
}

/// No column holds the session's data, its user, its cookie or its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_column_holds_plaintext_an_id_or_a_cookie() {
    let Some((store, tables)) = fixture().await else {
        return;
    };
    let pool = sqlx::PgPool::connect(&tables.url).await.unwrap();
    let prefix = tables.prefix.clone();
    nothing_readable_is_stored(store, || async {
        let mut bytes = Vec::new();
        for table in ["records", "user_index"] {
            let rows: Vec<(Vec<u8>,)> = sqlx::query_as(&format!(
                "SELECT convert_to(t::text, 'UTF8') FROM {prefix}{table} t"
            ))
            .fetch_all(&pool)
            .await
            .unwrap();
            let raw: Vec<(Vec<u8>,)> = sqlx::query_as(&format!(
                "SELECT {} FROM {prefix}{table}",
                if table == "records" {
                    "data"
                } else {
                    "user_tag"
                }
            ))
            .fetch_all(&pool)
            .await
            .unwrap();
            bytes.extend(rows.into_iter().chain(raw).flat_map(|(b,)| b));
        }
        bytes
    })
    .await;
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

/// A compare-and-set that waits for a concurrent writer's lock, and loses to
/// it once that commits, reports the record the writer left (its statement's
/// snapshot still shows the old one: the store reads again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compare_and_set_that_loses_to_a_later_commit_reports_what_it_left() {
    use tower_sealed_sessions::store::CompareAndSet;
    let Some((store, tables)) = fixture().await else {
        return;
    };
    let far = now().saturating_add(Duration::from_secs(3600));
    let deadlines = Deadlines {
        idle: far,
        lifespan: far,
        active: now(),
    };
    let key = StoreKey::from_bytes(rand::random());
    assert!(
        store
            .create(&key, &Record::new(1, deadlines, Bytes::from_static(b"one")))
            .await
            .unwrap()
    );
    let pool = sqlx::PgPool::connect(&tables.url).await.unwrap();
    let mut rival = pool.begin().await.unwrap();
    sqlx::query(&format!(
        "UPDATE {}records SET version = 2, data = 'two' WHERE key = $1",
        tables.prefix
    ))
    .bind(&key.as_bytes()[..])
    .execute(&mut *rival)
    .await
    .unwrap();
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move {
            let mine = Record::new(2, deadlines, Bytes::from_static(b"mine"));
            store.update(&key, &mine, 1).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the update waits for the rival's lock"
    );
    rival.commit().await.unwrap();
    match waiting.await.unwrap().unwrap() {
        CompareAndSet::Conflict(record) => {
            assert_eq!(record.version, 2);
            assert_eq!(&record.data[..], b"two");
        }
        other => panic!("expected the rival's record, got {other:?}"),
    }
}

/// A role that may read and write the tables, and create nothing, starts a
/// store on tables that are there, and uses it.
#[tokio::test]
async fn a_role_without_create_rights_starts_on_existing_tables() {
    let Some((store, tables)) = fixture().await else {
        return;
    };
    drop(store);
    let admin = sqlx::PgPool::connect(&tables.url).await.unwrap();
    let (role, url) = dml_role(&admin, &tables).await;
    let p = &tables.prefix;
    let outcome = async {
        let store = PostgresStore::from_settings(
            &tower_sealed_sessions::config::PostgresSettings::url(url.as_str())
                .with_table_prefix(p.as_str()),
        )
        .await?;
        let key = StoreKey::from_bytes(rand::random());
        let far = now().saturating_add(Duration::from_secs(60));
        let deadlines = Deadlines {
            idle: far,
            lifespan: far,
            active: now(),
        };
        store
            .create(&key, &Record::new(1, deadlines, Bytes::from_static(b"x")))
            .await?;
        store.load(&key).await
    }
    .await;
    for statement in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        sqlx::query(&statement).execute(&admin).await.unwrap();
    }
    assert!(outcome.expect("the store starts and works").is_some());
}
