//! Redis servers for tests: each test starts its own `redis-server` processes on
//! free loopback ports and stops them when dropped.
//!
//! Without a `redis-server` binary the tests fail when `CI` is set, and otherwise
//! skip with a printed reason.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Whether Redis tests can run here; panics under CI when they cannot.
pub fn available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but redis-server is not installed: .ci/run must install it"
        );
        println!("skipped: redis-server is not installed (apt-get install redis-server)");
    }
    found
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `redis-server` process.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    pub dir: PathBuf,
    args: Vec<String>,
    /// The `redis-cli` options that reach it over TLS, when it serves TLS only.
    tls_cli: Vec<String>,
}

impl RedisServer {
    /// A standalone server with no persistence.
    pub fn start() -> Self {
        Self::start_with(free_port(), &[])
    }

    /// A server on `port` with extra arguments.
    pub fn start_with(port: u16, extra: &[&str]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tss-redis-{port}-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = RedisServer {
            port,
            child: None,
            dir,
            args,
            tls_cli: Vec::new(),
        };
        server.resume();
        server
    }

    /// A server that speaks TLS only, with the certificates of `pki`; with
    /// `require_client_cert`, it refuses clients without one signed by its CA; with
    /// a `password`, it requires it.
    pub fn start_tls(pki: &Pki, require_client_cert: bool, password: Option<&str>) -> Self {
        let port = free_port();
        let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
        let tls_port = port.to_string();
        let (cert, key, ca) = (path(&pki.server_cert), path(&pki.server_key), path(&pki.ca));
        let auth = if require_client_cert { "yes" } else { "no" };
        let dir = std::env::temp_dir().join(format!(
            "tss-redis-tls-{port}-{:08x}",
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let args: Vec<String> = [
            "--port",
            "0",
            "--tls-port",
            &tls_port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir.to_str().unwrap(),
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            auth,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut args = args;
        let mut tls_cli: Vec<String> = [
            "--tls",
            "--cacert",
            &ca,
            "--cert",
            &path(&pki.client_cert),
            "--key",
            &path(&pki.client_key),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(password) = password {
            args.extend(["--requirepass".to_owned(), password.to_owned()]);
            tls_cli.extend([
                "-a".to_owned(),
                password.to_owned(),
                "--no-auth-warning".to_owned(),
            ]);
        }
        let mut server = RedisServer {
            port,
            child: None,
            dir,
            args,
            tls_cli,
        };
        server.resume();
        server
    }

    /// A sentinel on a free port watching `master_port` as `mymaster`, requiring
    /// `password` from its clients.
    pub fn sentinel(master_port: u16, password: &str) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("tss-sentinel-{port}-{:08x}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n\
                 requirepass {password}\n",
                dir.display()
            ),
        )
        .unwrap();
        let mut server = RedisServer {
            port,
            child: None,
            dir,
            args: vec![conf.to_str().unwrap().to_owned(), "--sentinel".to_owned()],
            tls_cli: Vec::new(),
        };
        server.resume_with_auth(Some(password));
        server
    }

    /// Starts the process again (after [`RedisServer::stop`]) on the same port.
    pub fn resume(&mut self) {
        self.resume_with_auth(None);
    }

    fn resume_with_auth(&mut self, password: Option<&str>) {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let ready = || match self.tls_cli.is_empty() {
            true => ping(self.port, password),
            false => (self.cli(&["PING"]) == "PONG").then_some(()),
        };
        wait_until(Duration::from_secs(10), ready)
            .unwrap_or_else(|| panic!("redis on port {} did not start", self.port));
    }

    /// Kills the process; the port stays reserved for [`RedisServer::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Runs a command with redis-cli and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all: Vec<&str> = self.tls_cli.iter().map(String::as_str).collect();
        all.extend(args);
        cli(self.port, &all)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Sends PING over a raw connection; `Some` when the server answered.
fn ping(port: u16, password: Option<&str>) -> Option<()> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_millis(500)))
        .ok()?;
    if let Some(password) = password {
        conn.write_all(format!("AUTH {password}\r\n").as_bytes())
            .ok()?;
    }
    conn.write_all(b"PING\r\n").ok()?;
    let mut buf = [0u8; 64];
    let mut seen = String::new();
    while !seen.contains("PONG") {
        let n = conn.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if seen.contains("-LOADING") || seen.contains("-ERR") {
            return None;
        }
    }
    Some(())
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit`.
pub fn wait_until<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(found) = check() {
            return Some(found);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `MONITOR` connection that counts the commands clients send, not those run
/// inside scripts.
pub struct Monitor {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    marker: u32,
}

impl Monitor {
    pub fn start(port: u16) -> Self {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.write_all(b"MONITOR\r\n").unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(conn).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut monitor = Monitor {
            port,
            lines,
            marker: 0,
        };
        monitor.take();
        monitor
    }

    /// The commands clients sent since the last call, as their upper-case names.
    /// A marker command delimits them, so nothing in flight is missed.
    pub fn take(&mut self) -> Vec<String> {
        self.marker += 1;
        let marker = format!("tss-marker-{}", self.marker);
        cli(self.port, &["ECHO", &marker]);
        let lines = wait_until(Duration::from_secs(5), || {
            let mut lines = self.lines.lock().unwrap();
            let at = lines.iter().position(|l| l.contains(&marker))?;
            Some(lines.drain(..=at).collect::<Vec<_>>())
        })
        .expect("the monitor sees the marker");
        lines
            .iter()
            .filter(|l| l.starts_with('+') && !l.contains(" lua]") && !l.contains("tss-marker"))
            .filter_map(|l| l.split('"').nth(1).map(str::to_uppercase))
            .collect()
    }
}

/// A Redis Cluster of three masters, each a [`RedisServer`], stopped when dropped.
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
}

impl Cluster {
    /// Starts three cluster-enabled servers on free ports, joins them and waits
    /// until every slot is served.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let port = free_port();
                let conf = format!("nodes-{port}.conf");
                // The bus port defaults to port + 10000, which may not exist (or be
                // taken) for an ephemeral port: pick a free one explicitly.
                let bus = free_port().to_string();
                RedisServer::start_with(
                    port,
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &conf,
                        "--cluster-port",
                        &bus,
                    ],
                )
            })
            .collect();
        let addresses = Self::addresses_of(&nodes);
        let mut create = vec!["--cluster", "create"];
        create.extend(addresses.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = nodes[0].cli(&create);
        assert!(out.contains("[OK] All 16384 slots covered"), "{out}");
        for node in &nodes {
            wait_until(Duration::from_secs(20), || {
                node.cli(&["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")
                    .then_some(())
            })
            .expect("the cluster becomes ready");
        }
        Cluster { nodes }
    }

    fn addresses_of(nodes: &[RedisServer]) -> Vec<String> {
        nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect()
    }

    /// The nodes' `host:port` addresses.
    pub fn addresses(&self) -> Vec<String> {
        Self::addresses_of(&self.nodes)
    }

    /// A store connected through the first node.
    #[cfg(feature = "redis")]
    pub async fn store(&self) -> tower_sealed_sessions::RedisStore {
        let settings = tower_sealed_sessions::config::RedisSettings::cluster(vec![
            self.addresses()[0].clone(),
        ]);
        tower_sealed_sessions::RedisStore::from_settings(&settings)
            .await
            .unwrap()
    }
}

/// Certificates for TLS tests, made fresh by each test: a CA, a server certificate
/// it signed (for `localhost`, `cache.internal` and 127.0.0.1), a client
/// certificate it signed, and another CA that signed nothing here.
/// PEM files in a temporary directory, removed when dropped.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (params, key, cert.pem())
}

impl Pki {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("tss-pki-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_params, ca_key, ca_pem) = ca("tower-sealed-sessions test CA");
        let (_, _, other_pem) = ca("another CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |names: Vec<String>, purpose: ExtendedKeyUsagePurpose, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![purpose];
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_pem, server_key) = leaf(
            vec![
                "localhost".into(),
                "cache.internal".into(),
                "127.0.0.1".into(),
            ],
            ExtendedKeyUsagePurpose::ServerAuth,
            "redis test server",
        );
        let (client_pem, client_key) = leaf(
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            "session store client",
        );
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        };
        Pki {
            ca: write("ca.crt", &ca_pem),
            other_ca: write("other-ca.crt", &other_pem),
            server_cert: write("server.crt", &server_pem),
            server_key: write("server.key", &server_key),
            client_cert: write("client.crt", &client_pem),
            client_key: write("client.key", &client_key),
            dir,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
