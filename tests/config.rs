//! `SessionConfig` from YAML and TOML, and every validation error it can give.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use tower_sealed_sessions::config::StoreConfig;
use tower_sealed_sessions::{Keys, MemoryStore, SameSite, Secret, SessionConfig, SessionLayer};

/// A fresh directory for key files.
fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tss-config-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const SECRET_B64: &str = "base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz";

fn yaml(text: &str) -> Result<SessionConfig, String> {
    serde_yaml_ng::from_str(text).map_err(|e| e.to_string())
}

/// A store of no particular kind (`custom`), which goes with any `store:`
/// section: for checking the other settings of files that name Redis or SQL.
fn any_store() -> common::TestStore {
    common::TestStore::new(MemoryStore::default())
}

/// The error `from_config` gives for `body` plus a valid secret.
fn refused(body: &str) -> (String, String) {
    let config = yaml(&format!("secret: \"{SECRET_B64}\"\n{body}")).expect("parses");
    let err = SessionLayer::from_config(&config, any_store()).unwrap_err();
    (err.field().to_owned(), err.to_string())
}

/// Every configuration file among the examples parses and builds a layer (on
/// the memory store: the store sections are checked by their stores' tests),
/// and names the store its comment says.
#[test]
fn every_example_configuration_builds_a_layer() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let config = yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let kind = match config.store() {
            StoreConfig::Memory { .. } => "memory",
            StoreConfig::Redis(_) => "redis",
            StoreConfig::Postgres(_) => "postgres",
            StoreConfig::Sqlite(_) => "sqlite",
            other => panic!("{other:?}"),
        };
        let dir = temp_dir();
        let config = yaml(&text.replace("target/", &format!("{}/", dir.display()))).unwrap();
        let built = SessionLayer::from_config(&config, any_store());
        std::fs::remove_dir_all(dir).unwrap();
        // A file with device binding needs its feature, and says so without it.
        if text.contains("\ndevice_binding:") && cfg!(not(feature = "device-binding")) {
            let err = built.unwrap_err();
            assert_eq!(err.field(), "device_binding", "{}: {err}", path.display());
            assert!(
                err.to_string().contains("`device-binding` feature"),
                "{err}"
            );
        } else {
            built.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        seen.push(kind);
    }
    seen.sort();
    assert_eq!(seen, ["memory", "memory", "postgres", "redis", "sqlite"]);
}

#[test]
fn the_documented_yaml_builds_a_layer() {
    let dir = temp_dir();
    let old = dir.join("old.key");
    std::fs::write(&old, b"an old secret that is long enough: 0123456789\n").unwrap();
    let text = format!(
        r#"
cookie: {{ name: id, domain: example.com, path: /, same_site: lax, secure: true, http_only: true }}
idle_timeout: 30m
lifespan: 24h
remember_me: 30d          # -1 disables
touch_interval: 1m
write_deadline: 500ms
eager_load: true
record_format: 2
cleanup_interval: 1h
max_sessions_per_user: 5
secret: "generate:{}"
previous_secrets: ["file:{}"]
store: {{ type: memory }}
"#,
        dir.join("session.key").display(),
        old.display()
    );
    let config = yaml(&text).unwrap();
    assert_eq!(
        config.store(),
        &StoreConfig::Memory {
            max_sessions: None,
            cache: None
        }
    );
    assert_eq!(config.cleanup_interval(), Duration::from_secs(3600));
    let layer = SessionLayer::from_config(&config, MemoryStore::default()).unwrap();
    assert_eq!(layer.idle_timeout(), Some(Duration::from_secs(1800)));
    assert_eq!(layer.lifespan(), Some(Duration::from_secs(86400)));
    let shown = format!("{layer:?}");
    for part in [
        "domain: Some(\"example.com\")",
        "same_site: Lax",
        "remember_me: Some(2592000s)",
        "touch_interval: 60s",
        "write_deadline: 500ms",
        "max_sessions_per_user: Some(5)",
        "eager_load: true",
        "record_format: 2",
    ] {
        assert!(shown.contains(part), "{shown} lacks {part}");
    }
    // The generated key is reused, and the old one is in the ring.
    let keys = config.load_keys().unwrap();
    assert_eq!(keys.primary_id(), config.load_keys().unwrap().primary_id());
    let old_id = Keys::new(&Secret::from_file(&old).unwrap()).primary_id();
    assert_eq!(keys.previous_ids(), [old_id]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn toml_reads_the_same_settings() {
    let toml_text = format!(
        r#"
idle_timeout = "20m"
lifespan = "7d"
remember_me = -1
secret = "{SECRET_B64}"

[cookie]
name = "__Host-session"
same_site = "strict"

[store]
type = "memory"
max_sessions = 5000
"#
    );
    let config: SessionConfig = toml::from_str(&toml_text).unwrap();
    assert_eq!(
        config.store(),
        &StoreConfig::Memory {
            max_sessions: Some(5000),
            cache: None
        }
    );
    let layer = SessionLayer::from_config(&config, MemoryStore::default()).unwrap();
    assert_eq!(layer.idle_timeout(), Some(Duration::from_secs(1200)));
    assert_eq!(layer.lifespan(), Some(Duration::from_secs(7 * 86400)));
    let shown = format!("{layer:?}");
    assert!(shown.contains("name: \"__Host-session\""), "{shown}");
    assert!(shown.contains("same_site: Strict"), "{shown}");
    assert!(shown.contains("remember_me: None"), "-1 disables: {shown}");
}

#[test]
fn every_validation_error_names_its_field_and_says_what_to_do() {
    let cases = [
        (
            "max_sessions_per_user: 0",
            "max_sessions_per_user",
            "invalid session setting `max_sessions_per_user`: 0 would end every session at \
             login; leave it out for no limit",
        ),
        (
            "cookie: { same_site: none, secure: false }",
            "cookie.same_site",
            "invalid session setting `cookie.same_site`: `none` requires `secure: true`: \
             browsers drop SameSite=None cookies that are not Secure",
        ),
        (
            "cookie: { name: __Host-id, domain: example.com }",
            "cookie.domain",
            "invalid session setting `cookie.domain`: a `__Host-` cookie must not have a Domain",
        ),
        (
            "cookie: { name: __Host-id, path: /app }",
            "cookie.path",
            "invalid session setting `cookie.path`: a `__Host-` cookie must have the path /",
        ),
        (
            "cookie: { name: __Host-id, secure: false }",
            "cookie.secure",
            "invalid session setting `cookie.secure`: a `__Host-` cookie must be Secure",
        ),
        (
            "cookie: { name: __Secure-id, secure: false }",
            "cookie.secure",
            "invalid session setting `cookie.secure`: a `__Secure-` cookie must be Secure",
        ),
        (
            "cookie: { name: \"a b\" }",
            "cookie.name",
            "invalid session setting `cookie.name`: \"a b\" is not a valid cookie name: use \
             letters, digits and !#$%&'*+-.^_`|~",
        ),
        (
            "cookie: { domain: \"example.com;x\" }",
            "cookie.domain",
            "invalid session setting `cookie.domain`: \"example.com;x\" is not a host name like \
             example.com",
        ),
        (
            "cookie: { path: app }",
            "cookie.path",
            "invalid session setting `cookie.path`: \"app\" is not a cookie path: it starts with \
             / and has no ; or control characters",
        ),
        (
            "cleanup_interval: 9s",
            "cleanup_interval",
            "invalid session setting `cleanup_interval`: 9s is shorter than the minimum of 10s",
        ),
        (
            "idle_timeout: 2d\nlifespan: 1d",
            "idle_timeout",
            "invalid session setting `idle_timeout`: 2d is longer than the lifespan of 1d, so it \
             never applies; shorten it or disable it with -1",
        ),
        (
            "idle_timeout: -1\nlifespan: -1",
            "idle_timeout",
            "invalid session setting `idle_timeout`: neither an idle timeout nor a lifespan is \
             set, so sessions never expire and the store grows without bound; set one, or set \
             allow_unbounded_sessions: true",
        ),
        (
            "remember_me: 1h",
            "remember_me",
            "invalid session setting `remember_me`: 1h is shorter than the lifespan of 1d, so \
             ticking remember-me would end sessions sooner; lengthen it or disable it with -1",
        ),
        (
            "max_lifespan: 0s",
            "max_lifespan",
            "invalid session setting `max_lifespan`: 0 would end every session at once; \
             disable it with -1 instead",
        ),
        (
            "lifespan: 1d\nremember_me: -1\nmax_lifespan: 12h",
            "max_lifespan",
            "invalid session setting `max_lifespan`: 12h is shorter than the lifespan of 1d, so \
             that would never apply; lengthen it or disable it with -1",
        ),
        (
            "remember_me: 30d\nmax_lifespan: 7d",
            "max_lifespan",
            "invalid session setting `max_lifespan`: 7d is shorter than the remember-me of 30d, \
             so that would never apply; lengthen it or disable it with -1",
        ),
        (
            "lifespan: 0s",
            "lifespan",
            "invalid session setting `lifespan`: 0 would end every session at once; disable it \
             with -1 instead",
        ),
        (
            "store: { type: redis, url: \"redis://127.0.0.1:6379\", value_format: 2 }",
            "store.value_format",
            "invalid session setting `store.value_format`: 2 is for a rolling upgrade, and the \
             older release refuses record format v3 as well: set record_format: 2 with it",
        ),
        (
            "record_format: 2\nstore: { type: redis, url: \"redis://127.0.0.1:6379\" }",
            "record_format",
            "invalid session setting `record_format`: 2 is for a rolling upgrade, and the older \
             release refuses Redis value format 3 as well: set store.value_format: 2 with it",
        ),
        (
            "record_format: 4",
            "record_format",
            "invalid session setting `record_format`: 4 is not a record format: write 3 (the \
             default) or 2",
        ),
    ];
    for (body, field, message) in cases {
        let (got_field, got_message) = refused(body);
        assert_eq!(got_field, field, "{body}");
        assert_eq!(got_message, message, "{body}");
    }
}

#[test]
fn unbounded_sessions_are_allowed_only_when_asked_for() {
    let text = format!(
        "secret: \"{SECRET_B64}\"\nidle_timeout: -1\nlifespan: -1\nallow_unbounded_sessions: true"
    );
    let layer = SessionLayer::from_config(&yaml(&text).unwrap(), MemoryStore::default()).unwrap();
    assert_eq!((layer.idle_timeout(), layer.lifespan()), (None, None));
}

#[test]
fn parse_errors_quote_the_bad_value_or_name_the_field() {
    let cases = [
        (
            "secret: x\nidle_timeout: 20x",
            "invalid duration \"20x\": its unit is not one of",
        ),
        (
            "secret: x\nidle_timeout: 30",
            "invalid duration 30: a number needs a unit",
        ),
        (
            "secret: x\ntouch_interval: -1",
            "invalid duration -1: a duration cannot be negative, and this one cannot be disabled",
        ),
        (
            "secret: x\nlifespan: \"-5\"",
            "invalid duration -5: a duration cannot be negative; -1 disables it",
        ),
        ("secret: x\nlifespan: \"-1\"\nidle_timeout: 5m", ""),
        (
            "secret: x\nidel_timeout: 30m",
            "unknown field `idel_timeout`",
        ),
        (
            "secret: x\neager_load: sometimes",
            "invalid type: string \"sometimes\", expected a boolean",
        ),
        (
            "secret: x\ncookie: { same_site: Lax }",
            "unknown variant `Lax`",
        ),
        (
            "secret: x\ncookie: { colour: blue }",
            "unknown field `colour`",
        ),
        (
            "secret: x\nstore: { type: floppy }",
            "unknown variant `floppy`",
        ),
        ("idle_timeout: 30m", "missing field `secret`"),
    ];
    for (text, needle) in cases {
        if needle.is_empty() {
            assert!(yaml(text).is_ok(), "{text} is valid");
            continue;
        }
        let err = yaml(text).err().unwrap_or_else(|| panic!("{text} parsed"));
        assert!(err.contains(needle), "{text}: {err}");
    }
    let err = yaml("secret: x\nidle_timeout: 20x").unwrap_err();
    assert!(err.contains("idle_timeout"), "the field is named: {err}");
}

#[test]
fn bad_secrets_name_their_field_and_keep_the_cause() {
    let dir = temp_dir();
    let config = yaml("secret: \"base64:c2hvcnQ=\"").unwrap();
    let err = SessionLayer::from_config(&config, MemoryStore::default()).unwrap_err();
    assert_eq!(err.field(), "secret");
    assert!(err.to_string().contains("5 bytes long"), "{err}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the KeyError is kept"
    );

    let text = format!(
        "secret: \"{SECRET_B64}\"\nprevious_secrets: [\"{SECRET_B64}\", \"file:{}\"]",
        dir.join("missing").display()
    );
    let err = SessionLayer::from_config(&yaml(&text).unwrap(), MemoryStore::default()).unwrap_err();
    assert_eq!(err.field(), "previous_secrets[1]");
    assert!(err.to_string().contains("No such file"), "{err}");

    // A directory that cannot be made (a file stands where it would go): the
    // error names the path and why.
    std::fs::write(dir.join("plainfile"), b"").unwrap();
    let err = SessionLayer::from_config(
        &yaml(&format!(
            "secret: \"generate:{}/plainfile/sub/key\"",
            dir.display()
        ))
        .unwrap(),
        MemoryStore::default(),
    )
    .unwrap_err();
    assert_eq!(err.field(), "secret");
    assert!(
        err.to_string().contains("plainfile/sub/key")
            && err.to_string().contains("Not a directory"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn debug_of_a_config_hides_inline_secrets() {
    let config = yaml(&format!(
        "secret: \"{SECRET_B64}\"\nprevious_secrets: [\"env:OLD\", \"an inline test secret 0123456789abcdef\"]"
    ))
    .unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains("c2Vzc2lvbi"), "{shown}");
    assert!(!shown.contains("inline test secret"), "{shown}");
    assert!(
        shown.contains("env:OLD"),
        "references are fine to show: {shown}"
    );
}

#[test]
#[should_panic(expected = "invalid session setting `cookie.same_site` (`with_same_site`)")]
fn a_layer_built_in_code_with_broken_settings_refuses_to_start() {
    use tower::Layer;
    let layer = SessionLayer::new(MemoryStore::default(), Keys::generate())
        .with_same_site(SameSite::None)
        .with_secure(false);
    assert!(layer.validate().is_err());
    let _ = layer.layer(tower::service_fn(|_: ()| async { Ok::<_, ()>(()) }));
}

#[test]
fn redis_store_sections_parse_and_hide_their_secrets() {
    let config = yaml(&format!(
        "secret: \"{SECRET_B64}\"\nstore:\n  type: redis\n  \
         url: \"redis://user:p@ss@cache.internal:6380/2?sentinelPassword=hunter2\"\n  \
         prefix: \"app:\"\n  timeout: 250ms\n"
    ))
    .unwrap();
    let StoreConfig::Redis(settings) = config.store() else {
        panic!("a redis section");
    };
    assert_eq!(settings.prefix.as_deref(), Some("app:"));
    assert_eq!(settings.timeout(), Duration::from_millis(250));
    let shown = format!("{config:?}");
    // The user name stays (it is no credential, and says who failed to log
    // in); the password, with its `@`, goes.
    assert!(
        shown.contains("redis://user:<redacted>@cache.internal:6380/2"),
        "{shown}"
    );
    for secret in ["p@ss", "ss@", "hunter2"] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }

    let sentinel = yaml(&format!(
        "secret: \"{SECRET_B64}\"\nstore: {{ type: redis, sentinel: {{ master_name: m, \
         nodes: [\"10.0.0.1:26379\"], password: sentinel-secret }}, password: data-secret }}"
    ))
    .unwrap();
    let shown = format!("{sentinel:?}");
    assert!(
        !shown.contains("sentinel-secret") && !shown.contains("data-secret"),
        "{shown}"
    );
    assert!(shown.contains("master_name: \"m\""), "{shown}");

    let both = yaml(&format!(
        "secret: \"{SECRET_B64}\"\nstore: {{ type: redis, url: \"redis://a:1\", cluster: {{ nodes: [] }} }}"
    ));
    assert!(
        both.is_ok(),
        "parses; the conflict is reported when connecting"
    );
    assert!(
        yaml("secret: x\nstore: { type: redis, uri: \"redis://a:1\" }").is_err(),
        "typos are errors"
    );
}

proptest::proptest! {
    /// Whatever an operator writes, parsing and validating it gives a value or an
    /// error, never a panic.
    #[test]
    fn arbitrary_configuration_text_never_panics(text in "\\PC{0,200}") {
        if let Ok(config) = serde_yaml_ng::from_str::<SessionConfig>(&text) {
            let _ = SessionLayer::from_config(&config, MemoryStore::default());
        }
    }

    #[test]
    fn arbitrary_field_values_never_panic(
        field in proptest::sample::select(vec![
            "idle_timeout", "lifespan", "remember_me", "touch_interval", "cleanup_interval",
            "write_deadline",
        ]),
        value in "[-0-9a-zA-Z .]{0,12}",
        name in "[ -~]{0,10}",
        path in "[ -~]{0,10}",
    ) {
        let text = format!(
            "secret: \"{SECRET_B64}\"\n{field}: \"{value}\"\ncookie: {{ name: \"{name}\", path: \"{path}\" }}\n"
        );
        if let Ok(config) = serde_yaml_ng::from_str::<SessionConfig>(&text) {
            let _ = SessionLayer::from_config(&config, MemoryStore::default());
        }
    }
}

/// A rolling upgrade on Redis sets both older formats, and builds.
#[test]
fn both_older_formats_together_build() {
    let config = yaml(&format!(
        "secret: \"{SECRET_B64}\"\nrecord_format: 2\nstore: {{ type: redis, url: \"redis://127.0.0.1:6379\", value_format: 2 }}"
    ))
    .unwrap();
    let layer = SessionLayer::from_config(&config, any_store()).unwrap();
    assert!(format!("{layer:?}").contains("record_format: 2"));
}

/// A file whose `store:` section names one store, given another in code, is
/// refused (it was silently ignored); a file without a section, or a store of
/// the application's own (`custom`), goes with any.
#[test]
fn a_store_section_the_code_does_not_follow_is_refused() {
    let redis = yaml(&format!(
        "secret: \"{SECRET_B64}\"\nstore: {{ type: redis, url: \"redis://127.0.0.1:6379\" }}"
    ))
    .unwrap();
    let err = SessionLayer::from_config(&redis, MemoryStore::default()).unwrap_err();
    assert_eq!(err.field(), "store.type");
    assert!(err.to_string().contains("SessionConfig::build"), "{err}");
    assert!(SessionLayer::from_config(&redis, any_store()).is_ok());
    let none = yaml(&format!("secret: \"{SECRET_B64}\"")).unwrap();
    assert!(SessionLayer::from_config(&none, MemoryStore::default()).is_ok());
}

/// `SessionConfig::build` makes the store the file names, with its cleanup
/// task; a store this build lacks is an error naming `store.type`.
#[tokio::test]
async fn build_makes_the_named_store_and_its_cleanup_task() {
    let memory = yaml(&format!(
        "secret: \"{SECRET_B64}\"\ncleanup_interval: 1m\nstore: {{ type: memory, max_sessions: 10 }}"
    ))
    .unwrap();
    let built = memory.build().await.unwrap();
    assert!(built.cleanup.is_some());
    let layer = built.spawn_cleanup();
    assert!(format!("{layer:?}").contains("SessionLayer"));
    #[cfg(feature = "sqlite")]
    {
        let dir = temp_dir();
        let sqlite = yaml(&format!(
            "secret: \"{SECRET_B64}\"\nstore: {{ type: sqlite, path: \"{}\" }}",
            dir.join("s.db").display()
        ))
        .unwrap();
        let built = sqlite.build().await.unwrap();
        assert!(built.cleanup.is_some());
        assert!(dir.join("s.db").exists(), "the file the section names");
        std::fs::remove_dir_all(dir).unwrap();
    }
    #[cfg(feature = "redis")]
    {
        let unreachable = yaml(&format!(
            "secret: \"{SECRET_B64}\"\nstore: {{ type: redis, url: \"redis://127.0.0.1:1\", timeout: 200ms }}"
        ))
        .unwrap();
        let err = unreachable.build().await.unwrap_err();
        assert_eq!(err.field(), "store", "{err}");
    }
}

/// A file with four mistakes reports all four in one run, each naming its
/// field, in the order of the checks; `errors()` lists them one by one.
#[test]
fn every_mistake_is_reported_in_one_run() {
    let config = yaml(
        "secret: \"base64:c2hvcnQ=\"\n\
         previous_secrets: [\"env:TSS_TEST_NOT_SET_ANYWHERE\"]\n\
         cookie: { name: \"bad name\", same_site: none, secure: false }\n\
         max_sessions_per_user: 0\n\
         cleanup_interval: 1s\n",
    )
    .unwrap();
    let err = SessionLayer::from_config(&config, MemoryStore::default()).unwrap_err();
    let fields: Vec<&str> = err.errors().map(|e| e.field()).collect();
    assert_eq!(
        fields,
        [
            "secret",
            "previous_secrets[0]",
            "cleanup_interval",
            "cookie.name",
            "cookie.same_site",
            "max_sessions_per_user",
        ],
        "{err}"
    );
    let shown = err.to_string();
    assert!(shown.starts_with("6 invalid session settings:"), "{shown}");
    assert_eq!(err.field(), "secret", "the first leads");
    assert_eq!(format!("{err:?}").lines().count(), 7, "{err:?}");
}

/// A layer built in code is told in code's terms: `None`, not `-1`.
#[test]
fn a_layer_built_in_code_hears_of_none() {
    use std::time::Duration;
    let err = SessionLayer::new(MemoryStore::default(), Keys::generate())
        .with_idle_timeout(Some(Duration::ZERO))
        .with_remember_me(Some(Duration::from_secs(60)))
        .validate()
        .unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("disable it with None"), "{shown}");
    assert!(!shown.contains("-1"), "{shown}");
}

/// `store.cache`: refused on the stores with no round trip to save, a zero
/// size or ttl refused, and a ttl longer than the idle timeout called pointless.
#[test]
fn store_cache_is_checked_where_it_is_written() {
    let cases = [
        (
            "store: { type: memory, cache: { max_entries: 10 } }",
            "store.cache",
            "memory store keeps its records in this process already",
        ),
        (
            "store: { type: sqlite, path: /tmp/x.db, cache: {} }",
            "store.cache",
            "a SQLite file is read in this process",
        ),
        (
            "store: { type: redis, url: \"redis://127.0.0.1:6379\", cache: { max_entries: 0 } }",
            "store.cache.max_entries",
            "0 would cache nothing",
        ),
        (
            "store: { type: postgres, url: \"postgres://a@b/c\", cache: { ttl: 0s } }",
            "store.cache.ttl",
            "0 would serve nothing",
        ),
        (
            "store: { type: postgres, url: \"postgres://a@b/c\", pool_size: 1, cache: {} }",
            "store.pool_size",
            "one connection of the pool listens",
        ),
        (
            "idle_timeout: 10m\nstore: { type: redis, url: \"redis://127.0.0.1:6379\", cache: { ttl: 1h } }",
            "store.cache.ttl",
            "1h is longer than the idle timeout (10m)",
        ),
    ];
    for (body, field, says) in cases {
        let (named, message) = refused(body);
        assert_eq!(named, field, "{body}: {message}");
        assert!(message.contains(says), "{body}: {message}");
    }
    let fine = "store: { type: redis, url: \"redis://127.0.0.1:6379\", cache: { max_entries: 10, ttl: 30s } }";
    let config = yaml(&format!("secret: \"{SECRET_B64}\"\n{fine}")).unwrap();
    assert!(SessionLayer::from_config(&config, any_store()).is_ok());
    let unknown = yaml("secret: x\nstore: { type: redis, url: \"redis://h\", cache: { size: 1 } }");
    assert!(unknown.unwrap_err().contains("unknown field `size`"));
}
