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
