//! A PostgreSQL server this test starts itself (initdb in a temporary
//! directory, on a free loopback port), frozen, stopped and started again under
//! a serving layer: requests get 503 (gRPC 14) within the store's timeout, and
//! succeed again without a restart of the application.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use reqwest::header::CONTENT_TYPE;
use tower_sealed_sessions::PostgresStore;
use tower_sealed_sessions::config::PostgresSettings;

use super::*;

/// The directory of PostgreSQL's server programs (`initdb`, `postgres`).
fn server_programs() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

/// The user and group the server runs as: `postgres` when this test runs as
/// root (which PostgreSQL refuses), otherwise whoever runs it.
fn server_user() -> Option<(u32, u32)> {
    let root = std::fs::metadata("/proc/self").ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    })?;
    if !root {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
}

/// A server in a directory of its own; stopped (by its process id) and the
/// directory removed when dropped.
struct Server {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    user: Option<(u32, u32)>,
    process: Option<Child>,
}

impl Server {
    /// initdb and start, or `None` (failing under `CI`) where PostgreSQL's
    /// server programs are not installed.
    fn start() -> Option<Server> {
        let Some(bin) = server_programs() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but PostgreSQL's initdb is not installed"
            );
            eprintln!("skipped: PostgreSQL's server programs are not installed");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("tss-pg-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let user = server_user();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let status = as_user(Command::new(bin.join("initdb")), user)
            .args(["-A", "trust", "-U", "root", "--no-sync", "-D"])
            .arg(dir.join("data"))
            .stdout(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(status.success(), "initdb");
        let port = free_port();
        let mut server = Server {
            bin,
            dir,
            port,
            user,
            process: None,
        };
        server.resume();
        Some(server)
    }

    fn url(&self) -> String {
        format!("postgres://root@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) and waits, at most 30 s, until it accepts.
    fn resume(&mut self) {
        let child = as_user(Command::new(self.bin.join("postgres")), self.user)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        self.process = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "postgres listens within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fast shutdown (SIGINT to the postmaster), waiting at most 30 s for it.
    fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            signal(child.id(), "INT");
            let started = Instant::now();
            while child.try_wait().unwrap().is_none() {
                if started.elapsed() > Duration::from_secs(30) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) the postmaster and every backend
    /// it started: a server that accepts connections and answers nothing.
    fn freeze(&self, frozen: bool) {
        let Some(child) = &self.process else { return };
        let signal_name = if frozen { "STOP" } else { "CONT" };
        signal(child.id(), signal_name);
        for backend in children(child.id()) {
            signal(backend, signal_name);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.freeze(false);
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn as_user(mut command: Command, user: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = user {
        use std::os::unix::process::CommandExt;
        command.uid(uid).gid(gid);
    }
    command
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn status(base: &str, path: &str, cookie: &str, grpc: bool) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header(COOKIE, cookie);
    if grpc {
        request = request.header(CONTENT_TYPE, "application/grpc");
    }
    request.send().await.unwrap()
}

/// What a request gets from a server that is down: 503 within `limit`, and a
/// gRPC request `grpc-status: 14`.
async fn unavailable_within(base: &str, cookie: &str, limit: Duration) {
    let started = Instant::now();
    let res = status(base, "/get/a", cookie, false).await;
    assert_eq!(res.status(), 503);
    assert!(
        started.elapsed() < limit,
        "503 within {limit:?}, took {:?}",
        started.elapsed()
    );
    let res = send(reqwest::Method::POST, format!("{base}/set/b/1"), None).await;
    assert_eq!(res.status(), 503, "a new session cannot be stored either");
    let res = status(base, "/get/a", cookie, true).await;
    assert_eq!(
        res.headers()["grpc-status"],
        "14",
        "gRPC clients see UNAVAILABLE"
    );
}

/// The session written before the outage reads back (within 20 s), without a
/// restart of the application.
async fn recovers(base: &str, cookie: &str) {
    let started = Instant::now();
    loop {
        let res = status(base, "/get/a", cookie, false).await;
        if res.status() == 200 {
            assert_eq!(res.text().await.unwrap(), "\"1\"", "the session survived");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "requests succeed again within 20 s of the server's return"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_or_frozen_answers_503_within_the_timeout_and_recovers() {
    let Some(mut server) = Server::start() else {
        return;
    };
    let timeout = Duration::from_millis(800);
    let settings = PostgresSettings::url(server.url()).with_timeout(timeout);
    let store = PostgresStore::from_settings(&settings).await.unwrap();
    let base = serve(app(store, |l| l)).await;
    let res = send(reqwest::Method::POST, format!("{base}/set/a/1"), None).await;
    assert_eq!(res.status(), 204);
    let cookie = cookie_pair(&res);

    // Frozen: connections are accepted and nothing answers, so only the timeout
    // ends a request.
    server.freeze(true);
    unavailable_within(&base, &cookie, timeout + Duration::from_secs(1)).await;
    server.freeze(false);
    recovers(&base, &cookie).await;

    // Stopped: connections are refused.
    server.stop();
    unavailable_within(&base, &cookie, timeout + Duration::from_secs(1)).await;
    server.resume();
    recovers(&base, &cookie).await;
    let res = send(reqwest::Method::POST, format!("{base}/set/c/1"), None).await;
    assert_eq!(res.status(), 204, "new sessions are stored again");
}
