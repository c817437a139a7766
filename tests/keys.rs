//! Loading a secret from the environment (a separate process, so that setting a
//! variable cannot race with the library's own unit tests).

use tower_sealed_sessions::{KeyError, Secret};

#[test]
fn environment_variable_is_read_as_is_and_errors_name_it() {
    let name = "TSS_TEST_SECRET_ENV";
    // SAFETY: this is the only test in this binary, so no other thread reads the
    // environment while it is written.
    unsafe { std::env::set_var(name, "N6Bo031RtSYWKdOhOlSFDD2IuzS4XKxouUaXuOCqOdNJ") };
    assert_eq!(Secret::from_env(name).unwrap().as_bytes().len(), 44);
    let via_reference = Secret::from_reference(&format!("env:{name}")).unwrap();
    assert_eq!(via_reference.as_bytes().len(), 44);

    let missing = Secret::from_env("TSS_TEST_SECRET_UNSET").unwrap_err();
    assert!(matches!(missing, KeyError::EnvNotSet(_)));
    assert_eq!(
        missing.to_string(),
        "environment variable TSS_TEST_SECRET_UNSET holding the session secret is not set"
    );

    // SAFETY: as above.
    unsafe { std::env::set_var(name, "short") };
    let err = Secret::from_env(name).unwrap_err().to_string();
    assert_eq!(
        err,
        "session secret is 5 bytes long, at least 32 random bytes are needed; generate one \
         with `cargo run --example keygen` or `openssl rand -base64 48` (from environment \
         variable TSS_TEST_SECRET_ENV)"
    );
}

/// `generate:` creates the directories the key file needs, for its owner only.
#[test]
fn generate_creates_missing_directories_private() {
    use tower_sealed_sessions::Secret;
    let root = std::env::temp_dir().join(format!("tss-keys-{:016x}", rand::random::<u64>()));
    let path = root.join("a/b/session.key");
    let first = Secret::from_reference(&format!("generate:{}", path.display())).unwrap();
    let again = Secret::from_reference(&format!("generate:{}", path.display())).unwrap();
    assert_eq!(
        first.as_bytes(),
        again.as_bytes(),
        "created once, then read"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(root.join("a")), 0o700);
        assert_eq!(mode(root.join("a/b")), 0o700);
        assert_eq!(mode(path.clone()), 0o600);
    }
    std::fs::remove_dir_all(root).unwrap();
}

/// What `fn main() -> Result<(), Box<dyn Error>>` prints (`Debug`) reads as well
/// as `Display`: no `Context { origin: ..., source: TooShort { ... } }`.
#[test]
fn key_and_config_errors_debug_as_they_display() {
    use tower_sealed_sessions::{MemoryStore, Secret, SessionConfig, SessionLayer};
    let err = Secret::from_reference("base64:c2hvcnQ=").unwrap_err();
    let shown = format!("{err:?}");
    assert_eq!(shown, err.to_string());
    assert!(!shown.contains("Context {"), "{shown}");
    let config: SessionConfig = serde_yaml_ng::from_str("secret: \"base64:c2hvcnQ=\"").unwrap();
    let err = SessionLayer::from_config(&config, MemoryStore::default()).unwrap_err();
    let shown = format!("{err:?}");
    assert!(
        shown.starts_with("invalid session setting `secret`"),
        "{shown}"
    );
    assert!(!shown.contains("ConfigError {"), "{shown}");
    assert!(!shown.contains("TooShort"), "{shown}");
}
