//! The quickstart as a process: configuration from `SESSION_CONFIG`, a key file that
//! survives restarts, and invalid configuration refused before listening.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Builds the quickstart with this test's features (so nothing is rebuilt) and
/// returns its path.
fn quickstart() -> PathBuf {
    let features: Vec<&str> = [
        ("memory-store", cfg!(feature = "memory-store")),
        ("axum", cfg!(feature = "axum")),
        ("redis", cfg!(feature = "redis")),
        ("postgres", cfg!(feature = "postgres")),
        ("sqlite", cfg!(feature = "sqlite")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--example",
            "quickstart",
            "--no-default-features",
        ])
        .args(["--features", &features.join(",")])
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .status()
        .expect("run cargo");
    assert!(status.success(), "the quickstart builds");
    // target/<profile>/deps/<this test> -> target/<profile>/examples/quickstart
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir
        .join("examples")
        .join(format!("quickstart{}", std::env::consts::EXE_SUFFIX))
}

struct Running {
    child: Child,
    key_id: String,
    base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the quickstart with `config` and waits (at most 30 s) until it listens.
fn start(exe: &Path, config: &Path) -> Running {
    let mut child = Command::new(exe)
        .env("SESSION_CONFIG", config)
        .env("ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the quickstart");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut key_id, mut base) = (None, None);
    while base.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the quickstart starts");
        if let Some(rest) = line.strip_prefix("session keys: primary ") {
            key_id = Some(rest.split(',').next().unwrap().to_owned());
        }
        if let Some(url) = line.strip_prefix("listening on ") {
            base = Some(url.to_owned());
        }
    }
    Running {
        child,
        key_id: key_id.expect("the key id is printed before listening"),
        base: base.unwrap(),
    }
}

async fn login(base: &str) -> reqwest::Response {
    let body = serde_json::json!({"username": "ada"});
    let request = reqwest::Client::new().post(format!("{base}/api/login"));
    request.json(&body).send().await.unwrap()
}

/// Logs in on a quickstart started with `config`, restarts it, and returns what
/// `/api/session` says with the first process's cookie.
#[cfg(any(feature = "redis", feature = "postgres", feature = "sqlite"))]
async fn session_after_a_restart(exe: &Path, config: &Path) -> (serde_json::Value, Running) {
    let first = start(exe, config);
    let res = login(&first.base).await;
    let set_cookie = res.headers()["set-cookie"].to_str().unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    drop(first);

    let second = start(exe, config);
    let res = reqwest::Client::new()
        .get(format!("{}/api/session", second.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    (res.json().await.unwrap(), second)
}

/// A configuration file in `dir` for the quickstart: cookies over http, a key
/// file in `dir`, and `store` as the `store:` section.
#[cfg(any(feature = "redis", feature = "postgres", feature = "sqlite"))]
fn store_config(dir: &Path, store: &str) -> PathBuf {
    let config = dir.join("session.yaml");
    let key = dir.join("session.key");
    let text = format!(
        "cookie: {{ secure: false }}\nsecret: \"generate:{}\"\nstore: {store}\n",
        key.display()
    );
    std::fs::write(&config, text).unwrap();
    config
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tss-qs-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn generated_key_is_created_once_and_reused_across_restarts() {
    let exe = quickstart();
    let dir = temp_dir();
    let key = dir.join("session.key");
    let config = dir.join("session.yaml");
    std::fs::write(
        &config,
        format!(
            "cookie: {{ secure: false }}\nidle_timeout: 10m\nsecret: \"generate:{}\"\n",
            key.display()
        ),
    )
    .unwrap();

    let first = start(&exe, &config);
    let written = std::fs::read(&key).expect("the key file was created");
    let res = login(&first.base).await;
    assert_eq!(res.status(), 200);
    let first_id = first.key_id.clone();
    drop(first);

    let second = start(&exe, &config);
    assert_eq!(second.key_id, first_id, "the same key after a restart");
    assert_eq!(
        std::fs::read(&key).unwrap(),
        written,
        "the key file was not rewritten"
    );
    drop(second);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn invalid_configuration_stops_it_before_it_listens() {
    let exe = quickstart();
    let dir = temp_dir();
    let cases = [
        (
            "secret: \"base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz\"\n\
             cookie: { same_site: none, secure: false }\n",
            "invalid session setting `cookie.same_site`",
        ),
        (
            "secret: x\nidel_timeout: 5m\n",
            "unknown field `idel_timeout`",
        ),
        ("secret: short\n", "invalid session setting `secret`"),
    ];
    for (i, (text, needle)) in cases.into_iter().enumerate() {
        let config = dir.join(format!("bad{i}.yaml"));
        std::fs::write(&config, text).unwrap();
        let out = Command::new(&exe)
            .env("SESSION_CONFIG", &config)
            .env("ADDR", "127.0.0.1:0")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{text}: {stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!stdout.contains("listening"), "{text}: {stdout}");
        if text.starts_with("secret: short") {
            assert_eq!(
                stderr
                    .matches("warning: the session secret is written into the configuration")
                    .count(),
                1,
                "the inline-secret warning reaches stderr once, without a subscriber: {stderr}"
            );
        }
    }
    let missing = Command::new(&exe)
        .env("SESSION_CONFIG", dir.join("nope.yaml"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.yaml"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(feature = "redis")]
#[path = "common/redis.rs"]
#[allow(dead_code)]
mod redis_server;

#[cfg(feature = "redis")]
#[tokio::test]
async fn on_redis_a_login_survives_a_restart_of_the_process() {
    if !redis_server::available() {
        return;
    }
    let mut server = redis_server::RedisServer::start();
    let exe = quickstart();
    let dir = temp_dir();
    let config = store_config(
        &dir,
        &format!(
            "{{ type: redis, url: \"{}\", prefix: \"qs:\" }}",
            server.url()
        ),
    );
    let (body, second) = session_after_a_restart(&exe, &config).await;
    assert_eq!(
        body["user"], "ada",
        "still logged in after the restart: {body}"
    );

    // The health check reports the store: up, then down, then up again.
    let health = || async {
        let res = reqwest::get(format!("{}/healthz", second.base))
            .await
            .unwrap();
        (
            res.status().as_u16(),
            res.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let (status, body) = health().await;
    assert_eq!(
        (status, body["store"].as_str()),
        (200, Some("ok")),
        "{body}"
    );
    server.stop();
    let (status, body) = health().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    server.resume();
    let mut up = false;
    for _ in 0..50 {
        if health().await.0 == 200 {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(up, "healthy again once Redis is back, without a restart");
    // An evicting policy set while running: still served (200), reported degraded.
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let (status, body) = health().await;
    assert_eq!(
        (status, &body["status"]),
        (200, &"degraded".into()),
        "{body}"
    );
    let why = body["store"].as_str().unwrap_or_default();
    assert!(why.contains("maxmemory-policy allkeys-lru"), "{body}");
    server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    let (status, body) = health().await;
    assert_eq!((status, &body["status"]), (200, &"ok".into()), "{body}");
    drop(second);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The PostgreSQL server on 127.0.0.1:5432 (or `POSTGRES_URL`), its URL, and a
/// table prefix of the test's own; `None` (a skip) when it is not reachable
/// outside CI.
#[cfg(feature = "postgres")]
async fn postgres() -> Option<(sqlx::PgPool, String, String)> {
    let url = std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    match sqlx::PgPool::connect(&url).await {
        Ok(pool) => Some((pool, url, format!("qs_{:016x}_", rand::random::<u64>()))),
        Err(err) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but PostgreSQL is not reachable at {url}: {err}"
            );
            eprintln!("skipped: no PostgreSQL at {url}: {err}");
            None
        }
    }
}

/// Drops the tables (and the cache's trigger function) under `prefix`.
#[cfg(feature = "postgres")]
async fn drop_tables(pool: &sqlx::PgPool, prefix: &str) {
    for table in ["records", "user_index", "schema"] {
        sqlx::query(&format!("DROP TABLE IF EXISTS {prefix}{table}"))
            .execute(pool)
            .await
            .unwrap();
    }
    sqlx::query(&format!("DROP FUNCTION IF EXISTS {prefix}notify()"))
        .execute(pool)
        .await
        .unwrap();
}

/// The quickstart on PostgreSQL (the server on 127.0.0.1:5432, or
/// `POSTGRES_URL`), on tables of this test's own: a login survives a restart of
/// the process.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn on_postgres_a_login_survives_a_restart_of_the_process() {
    let Some((pool, url, prefix)) = postgres().await else {
        return;
    };
    let exe = quickstart();
    let dir = temp_dir();
    let config = store_config(
        &dir,
        &format!("{{ type: postgres, url: \"{url}\", table_prefix: \"{prefix}\" }}"),
    );
    let (body, second) = session_after_a_restart(&exe, &config).await;
    drop(second);
    drop_tables(&pool, &prefix).await;
    std::fs::remove_dir_all(dir).unwrap();
    assert_eq!(
        body["user"], "ada",
        "still logged in after the restart: {body}"
    );
}

/// The quickstart on a SQLite file of this test's own: a login survives a
/// restart of the process.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn on_sqlite_a_login_survives_a_restart_of_the_process() {
    let exe = quickstart();
    let dir = temp_dir();
    let config = store_config(
        &dir,
        &format!(
            "{{ type: sqlite, path: \"{}\" }}",
            dir.join("data/sessions.db").display()
        ),
    );
    let (body, second) = session_after_a_restart(&exe, &config).await;
    drop(second);
    assert!(
        dir.join("data/sessions.db").exists(),
        "the file named in store.path"
    );
    std::fs::remove_dir_all(dir).unwrap();
    assert_eq!(
        body["user"], "ada",
        "still logged in after the restart: {body}"
    );
}

/// An anonymous flood of ten times `store.max_sessions` (1,000) visits, each of which
/// writes a session (the page counts visits), logs no user out: the memory store
/// evicts anonymous sessions first.
#[tokio::test]
async fn an_anonymous_flood_logs_no_user_out() {
    let exe = quickstart();
    let dir = temp_dir();
    let config = dir.join("session.yaml");
    std::fs::write(
        &config,
        "cookie: { secure: false }\nsecret: \"base64:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\"\n\
         store: { type: memory, max_sessions: 1000 }\n",
    )
    .unwrap();
    let running = start(&exe, &config);
    let base = running.base.clone();
    let mut users = Vec::new();
    for n in 0..20 {
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .unwrap();
        let body = serde_json::json!({"username": format!("user-{n}")});
        let res = client
            .post(format!("{base}/api/login"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        users.push(client);
    }
    // Sixteen workers, 625 cookieless visits each.
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let url = format!("{base}/api/session");
            tokio::spawn(async move {
                let anonymous = reqwest::Client::new();
                for _ in 0..625 {
                    let res = anonymous.get(&url).send().await.unwrap();
                    assert_eq!(res.status(), 200);
                    assert_eq!(set_cookie_count(&res), 1, "each visit stores a session");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    for (n, client) in users.iter().enumerate() {
        let res = client.get(format!("{base}/api/me")).send().await.unwrap();
        let me: Option<String> = res.json().await.unwrap();
        assert_eq!(
            me.as_deref(),
            Some(format!("user-{n}").as_str()),
            "still logged in"
        );
    }
    drop(running);
    std::fs::remove_dir_all(dir).unwrap();
}

fn set_cookie_count(res: &reqwest::Response) -> usize {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .count()
}

/// Two quickstarts with `store.cache` on one store (the same key file): a login
/// on A is seen on B, a logout on A is refused on B, and so is a "log out
/// everywhere"; B's `/api/me` is served from its cache meanwhile.
#[cfg(any(feature = "redis", feature = "postgres"))]
async fn two_cached_processes_agree(exe: &Path, config: &Path) {
    let a = start(exe, config);
    let b = start(exe, config);
    let client = reqwest::Client::new();
    let me = |base: String, cookie: String| {
        let client = client.clone();
        async move {
            let res = client
                .get(format!("{base}/api/me"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            (
                res.status().as_u16(),
                res.json::<serde_json::Value>().await.ok(),
            )
        }
    };
    // Within 2 s, polled every 5 ms.
    let until = |base: String, cookie: String, want: serde_json::Value| async move {
        for _ in 0..400 {
            if me(base.clone(), cookie.clone()).await == (200, Some(want.clone())) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{base} never answered {want}");
    };
    for round in 0..10 {
        let res = login(&a.base).await;
        let set_cookie = res.headers()["set-cookie"].to_str().unwrap();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        until(b.base.clone(), cookie.clone(), "ada".into()).await;
        // Hot now: B answers again and again from its cache.
        for _ in 0..10 {
            assert_eq!(
                me(b.base.clone(), cookie.clone()).await,
                (200, Some("ada".into()))
            );
        }
        let path = if round % 2 == 0 {
            "/api/logout"
        } else {
            "/api/logout-everywhere"
        };
        let res = client
            .post(format!("{}{path}", a.base))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        until(b.base.clone(), cookie, serde_json::Value::Null).await;
    }
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn on_redis_two_cached_processes_see_each_others_logins_and_logouts() {
    if !redis_server::available() {
        return;
    }
    let server = redis_server::RedisServer::start();
    let exe = quickstart();
    let dir = temp_dir();
    let config = store_config(
        &dir,
        &format!(
            "{{ type: redis, url: \"{}\", cache: {{ max_entries: 1000, ttl: 1m }} }}",
            server.url()
        ),
    );
    // The key file is made by the first process to start.
    drop(start(&exe, &config));
    two_cached_processes_agree(&exe, &config).await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn on_postgres_two_cached_processes_see_each_others_logins_and_logouts() {
    let Some((pool, url, prefix)) = postgres().await else {
        return;
    };
    let exe = quickstart();
    let dir = temp_dir();
    let config = store_config(
        &dir,
        &format!(
            "{{ type: postgres, url: \"{url}\", table_prefix: \"{prefix}\", cache: {{ max_entries: 1000, ttl: 1m }} }}"
        ),
    );
    drop(start(&exe, &config));
    two_cached_processes_agree(&exe, &config).await;
    drop_tables(&pool, &prefix).await;
    std::fs::remove_dir_all(dir).unwrap();
}
