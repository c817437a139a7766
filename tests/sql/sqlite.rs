//! `SqliteStore` on database files of each test's own, in a temporary directory
//! removed when the test ends.

use std::path::PathBuf;
use std::sync::Arc;

use tower_sealed_sessions::SqliteStore;
use tower_sealed_sessions::config::SqliteSettings;
use tower_sealed_sessions::store::CompareAndSet;

use super::*;

/// A temporary directory, removed with everything in it when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("tss-sqlite-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn file(&self) -> PathBuf {
        self.0.join("sessions.db")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn fixture() -> (SqliteStore, Dir) {
    let dir = Dir::new();
    let store = SqliteStore::open(dir.file()).await.unwrap();
    (store, dir)
}

mod conformance {
    use super::*;

    tower_sealed_sessions::store_conformance_tests!(fixture());
}

#[tokio::test]
async fn cleanup_deletes_expired_rows_in_batches_and_nothing_else() {
    let (store, _dir) = fixture().await;
    super::cleanup_deletes_expired_rows_in_batches_and_nothing_else(&store).await;
}

/// The `store:` section opens the file, and a login outlives the process that
/// made it: a second store and layer, built from the same file, open its cookie.
#[tokio::test]
async fn a_file_configured_store_keeps_a_login_across_a_restart() {
    use tower_sealed_sessions::config::StoreConfig;
    let dir = Dir::new();
    let yaml = format!(
        "secret: \"base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz\"\n\
         cookie: {{ secure: false }}\n\
         store: {{ type: sqlite, path: \"{}\" }}",
        dir.file().display()
    );
    a_login_outlives_the_layer(&yaml, async |config: &SessionConfig| {
        let StoreConfig::Sqlite(settings) = config.store() else {
            panic!("a sqlite section")
        };
        SqliteStore::from_settings(settings).await.unwrap()
    })
    .await;
}

/// A read-only request is one query, a write one more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_is_one_query_and_a_write_one_more() {
    let dir = Dir::new();
    let prefix = format!("q{:016x}_", rand::random::<u64>());
    let store =
        SqliteStore::from_settings(&SqliteSettings::path(dir.file()).with_table_prefix(&prefix))
            .await
            .unwrap();
    queries_per_request(store, &prefix, "UPDATE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_user_sessions_suite_and_lists_a_thousand_of_one_user() {
    let (store, _dir) = fixture().await;
    user_sessions(store, "sqlite").await;
}

/// A hundred writers of one session, half setting keys, half incrementing a
/// counter, within the default write deadline: they take turns in the process,
/// one compare-and-set each, and none is refused or lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_writers_of_one_session_are_all_answered_and_lose_nothing() {
    let (store, _dir) = fixture().await;
    let base = serve(app(store, |l| l)).await;
    let cookie = common::concurrent_writers(std::slice::from_ref(&base), 100).await;
    common::check_writers(&base, &cookie, 100).await;
}

/// 64 tasks on each of two stores opened on one file (two processes, as far as
/// SQLite can tell: each has its own connections) write at once: sessions
/// created, updated through compare-and-set, indexed, touched and deleted, and
/// read meanwhile. None fails ("database is locked" was tower-sessions' SQLite
/// bug), and every write is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_writers_on_one_file_never_see_database_is_locked() {
    let dir = Dir::new();
    let stores = [
        Arc::new(SqliteStore::open(dir.file()).await.unwrap()),
        Arc::new(SqliteStore::open(dir.file()).await.unwrap()),
    ];
    let now = now();
    let later = now.saturating_add(Duration::from_secs(3600));
    let deadlines = Deadlines {
        idle: later,
        lifespan: later,
        active: now,
    };
    let user = UserTag::from_bytes(rand::random());
    let mut tasks = Vec::new();
    for n in 0..128u64 {
        let store = stores[(n % 2) as usize].clone();
        tasks.push(tokio::spawn(async move {
            let key = StoreKey::from_bytes(rand::random());
            let record = |v: u64| Record::new(v, deadlines, Bytes::from(vec![n as u8; 200]));
            assert!(store.create(&key, &record(1)).await?);
            store
                .index_add(&user, &IndexEntry::new(key, now, later, now, false))
                .await?;
            for v in 1..5 {
                assert_eq!(
                    store.update(&key, &record(v + 1), v).await?,
                    CompareAndSet::Done
                );
                assert!(store.load(&key).await?.is_some());
            }
            assert!(store.touch(&key, deadlines, 5).await?);
            if n % 4 == 0 {
                store.delete(&key).await?;
                store.index_remove(&user, &[key]).await?;
            }
            Ok::<_, tower_sealed_sessions::StoreError>((n, key))
        }));
    }
    let mut kept = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok((n, key)) if n % 4 != 0 => kept.push(key),
            Ok(_) => {}
            Err(err) => panic!("a concurrent write failed: {err}"),
        }
    }
    let listed = stores[1].index_list(&user, now).await.unwrap();
    assert_eq!(
        listed.len(),
        96,
        "every index entry kept, every removal done"
    );
    for key in &kept {
        let record = stores[0]
            .load(key)
            .await
            .unwrap()
            .expect("every write kept");
        assert_eq!(record.version, 5);
    }
}

/// The file is created with its missing directories, readable by its owner
/// only, in WAL mode; and neither it nor its write-ahead log holds the
/// session's data, user, cookie or id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_is_private_in_wal_mode_and_holds_nothing_readable() {
    let dir = Dir::new();
    let file = dir.0.join("a/b/sessions.db");
    let store = SqliteStore::open(&file).await.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&dir.0.join("a/b")), 0o700);
        assert_eq!(mode(&dir.0.join("a")), 0o700);
    }
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let read = || {
        let file = file.clone();
        async move {
            let mut bytes = std::fs::read(&file).unwrap();
            bytes.extend(std::fs::read(file.with_extension("db-wal")).unwrap_or_default());
            bytes
        }
    };
    nothing_readable_is_stored(store, read).await;
}

/// Processes starting together on a new file (here, eight stores opened at
/// once) all start: switching the file to WAL mode, and creating the schema,
/// wait for each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_opened_together_on_a_new_file_all_start() {
    let dir = Dir::new();
    let opening: Vec<_> = (0..8)
        .map(|_| tokio::spawn(SqliteStore::open(dir.file())))
        .collect();
    for store in opening {
        store.await.unwrap().expect("every store starts");
    }
}

/// Settings that cannot work are refused, naming the field.
#[tokio::test]
async fn unusable_settings_are_refused_naming_the_field() {
    let dir = Dir::new();
    let err = SqliteStore::open(&dir.0).await.unwrap_err();
    assert!(err.to_string().contains("store.path"), "{err}");
    assert!(err.to_string().contains("is a directory"), "{err}");
    std::fs::write(dir.0.join("file"), b"").unwrap();
    let err = SqliteStore::open(dir.0.join("file/sessions.db"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("store.path"), "{err}");
    let err = SqliteStore::from_settings(&SqliteSettings::path(dir.file()).with_table_prefix("x;"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("store.table_prefix"), "{err}");
}

/// Opening again changes nothing; a schema newer than this release knows is
/// refused rather than written to.
#[tokio::test]
async fn the_schema_is_created_once_and_a_newer_one_is_refused() {
    let (_, dir) = fixture().await;
    SqliteStore::open(dir.file())
        .await
        .expect("a second start finds the schema");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.file().display()))
        .await
        .unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM session_schema")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "one version row, however many starts");
    sqlx::query("UPDATE session_schema SET version = 99")
        .execute(&pool)
        .await
        .unwrap();
    let err = SqliteStore::open(dir.file()).await.unwrap_err();
    assert!(err.to_string().contains("schema version 99"), "{err}");
}
