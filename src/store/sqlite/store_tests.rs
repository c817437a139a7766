//! `SqliteStore`'s own tests: the files it opens, and whom it trusts them from.

use super::*;

/// A temporary directory, removed with everything in it when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("tss-sqlite-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The error of opening a store on `file`, which must be refused: its message
/// names `store.path` and `named`, and says `why`.
#[cfg(unix)]
async fn refused(file: &std::path::Path, named: &std::path::Path, why: &str) {
    let err = match SqliteStore::open(file).await {
        Ok(_) => panic!("{} was opened, though {why}", named.display()),
        Err(err) => err.to_string(),
    };
    assert!(
        err.contains(&format!("store.path: {}: ", named.display())) && err.contains(why),
        "{err}"
    );
}

/// A database file, or a `-wal` or `-shm` file beside it, that another user
/// could have planted or can rewrite is refused, naming `store.path` and the
/// file: a symbolic link, one writable by others, one of another owner; and so
/// is a directory others can write (without the sticky bit).
#[cfg(unix)]
#[tokio::test]
async fn a_database_file_another_user_planted_or_can_rewrite_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &std::path::Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    // `name` with `suffix` appended to its file name.
    let beside = |name: &std::path::Path, suffix: &str| {
        let mut name = name.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    };
    let dir = TempDir::new();
    let file = dir.0.join("sessions.db");
    // Stores are opened on files of their own after each refusal: a store's
    // connections close in the background after it is dropped, and SQLite
    // then removes the `-wal` file a test would have planted.
    let elsewhere = dir.0.join("elsewhere.db");
    std::fs::write(&elsewhere, b"").unwrap();
    chmod(&elsewhere, 0o600);
    std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
    refused(&file, &file, "symbolic link").await;
    std::fs::remove_file(&file).unwrap();
    std::fs::rename(&elsewhere, &file).unwrap();
    chmod(&file, 0o666);
    refused(&file, &file, "writable by others (mode 0666)").await;
    chmod(&file, 0o600);
    drop(
        SqliteStore::open(&file)
            .await
            .expect("its own private file opens"),
    );

    let walled = dir.0.join("walled.db");
    let wal = beside(&walled, "-wal");
    std::os::unix::fs::symlink(dir.0.join("nowhere"), &wal).unwrap();
    refused(&walled, &wal, "symbolic link").await;
    assert!(
        !dir.0.join("nowhere").exists(),
        "nothing written through it"
    );
    std::fs::remove_file(&wal).unwrap();
    let shm = beside(&walled, "-shm");
    std::fs::write(&shm, b"").unwrap();
    chmod(&shm, 0o646);
    refused(&walled, &shm, "writable by others (mode 0646)").await;
    std::fs::remove_file(&shm).unwrap();

    let open = dir.0.join("open.db");
    chmod(&dir.0, 0o777);
    refused(
        &open,
        &open,
        "writable by others (mode 0777) without the sticky bit",
    )
    .await;
    assert!(!open.exists(), "no file is created there");
    chmod(&dir.0, 0o1777);
    drop(
        SqliteStore::open(&open)
            .await
            .expect("a sticky directory is fine"),
    );
    chmod(&dir.0, 0o755);

    if !crate::testing::can_chown("a_database_file_another_user_planted_or_can_rewrite_is_refused")
    {
        return;
    }
    let theirs = dir.0.join("theirs.db");
    let wal = beside(&theirs, "-wal");
    std::fs::write(&wal, b"").unwrap();
    chmod(&wal, 0o600);
    std::os::unix::fs::chown(&wal, Some(65534), None).unwrap();
    refused(&theirs, &wal, "uid 65534").await;
    std::fs::remove_file(&wal).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
    refused(&theirs, &theirs, "uid 65534").await;
}
