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
