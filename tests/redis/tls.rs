//! TLS with rustls: a session round trip over TLS with a client certificate and a
//! password read by reference, the certificate checked under a configured name, a
//! wrong CA and a missing client certificate refused when connecting.

use super::*;

use common::redis::Pki;

/// Settings for the TLS server `server`, from a configuration file's `store:`
/// section, with `tls` written out.
fn settings_from_yaml(url: &str, tls: &str, extra: &str) -> RedisSettings {
    let config: SessionConfig = serde_yaml_ng::from_str(&format!(
        "secret: \"base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz\"\n\
         store:\n  type: redis\n  url: \"{url}\"\n  tls: {tls}\n{extra}"
    ))
    .unwrap();
    let StoreConfig::Redis(settings) = config.store() else {
        panic!("a redis store section");
    };
    (**settings).clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_round_trips_over_tls_with_a_client_certificate_and_a_password_file() {
    if !available() {
        return;
    }
    let pki = Pki::new();
    let server = RedisServer::start_tls(&pki, true, Some("tls-pass-0123"));
    let password = pki.dir.join("redis.password");
    std::fs::write(&password, "tls-pass-0123\n").unwrap();
    let settings = settings_from_yaml(
        &format!("rediss://localhost:{}/0", server.port),
        &format!(
            "{{ ca_file: {}, cert_file: {}, key_file: {} }}",
            pki.ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
        &format!("  password: \"file:{}\"\n", password.display()),
    );
    let shown = format!("{settings:?}");
    assert!(!shown.contains("tls-pass"), "{shown}");
    let store = RedisStore::from_settings(&settings).await.unwrap();
    let base = serve(app(store, |l| l)).await;
    let res = send(reqwest::Method::POST, &base, "/set/greeting/hello", None).await;
    assert_eq!(res.status(), 204);
    let cookie = cookie_pair(&res);
    assert_eq!(read(&base, &cookie, "greeting").await, json!("hello"));
    assert_eq!(
        server.cli(&["DBSIZE"]),
        "1",
        "the session is in the TLS server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_checked_under_the_configured_server_name() {
    if !available() {
        return;
    }
    let pki = Pki::new();
    let server = RedisServer::start_tls(&pki, false, None);
    // The certificate names cache.internal; the URL names an address it also
    // carries, and a server name it must carry.
    let tls = |name: &str| format!("{{ ca_file: {}, server_name: {name} }}", pki.ca.display());
    let url = format!("rediss://127.0.0.1:{}/0", server.port);
    let store = RedisStore::from_settings(&settings_from_yaml(&url, &tls("cache.internal"), ""))
        .await
        .expect("the certificate carries cache.internal");
    let base = serve(app(store, |l| l)).await;
    let res = send(reqwest::Method::POST, &base, "/set/a/1", None).await;
    assert_eq!(res.status(), 204);

    let err = RedisStore::from_settings(&settings_from_yaml(&url, &tls("other.internal"), ""))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("certificate") || err.contains("Certificate") || err.contains("TLS"),
        "a name the certificate does not carry is refused: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_a_missing_client_certificate_is_refused_when_connecting() {
    if !available() {
        return;
    }
    let pki = Pki::new();
    let server = RedisServer::start_tls(&pki, true, None);
    let url = format!("rediss://localhost:{}/0", server.port);
    let started = Instant::now();
    let wrong_ca = settings_from_yaml(
        &url,
        &format!(
            "{{ ca_file: {}, cert_file: {}, key_file: {} }}",
            pki.other_ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        ),
        "",
    );
    let err = RedisStore::from_settings(&wrong_ca)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "the error says the server's certificate was not trusted: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once"
    );

    let no_client_cert =
        settings_from_yaml(&url, &format!("{{ ca_file: {} }}", pki.ca.display()), "");
    let err = RedisStore::from_settings(&no_client_cert)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            tower_sealed_sessions::StoreError::Backend(_)
                | tower_sealed_sessions::StoreError::Timeout(_)
        ),
        "a server that requires a client certificate refuses us: {err}"
    );

    let missing_file = settings_from_yaml(&url, "{ ca_file: /nonexistent/ca.crt }", "");
    let err = RedisStore::from_settings(&missing_file)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("store.tls.ca_file") && err.contains("/nonexistent/ca.crt"),
        "{err}"
    );

    let plain = RedisSettings::url(format!("redis://localhost:{}/0", server.port))
        .with_timeout(Duration::from_millis(500));
    assert!(
        RedisStore::from_settings(&plain).await.is_err(),
        "plain text to a TLS port is not a working store"
    );
}

#[tokio::test]
async fn a_missing_password_reference_names_its_field() {
    let settings = RedisSettings::url("redis://127.0.0.1:1/0")
        .with_password("file:/nonexistent/redis-password");
    let err = RedisStore::from_settings(&settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("store.password") && err.contains("/nonexistent/redis-password"),
        "{err}"
    );
    let settings = RedisSettings::url("redis://127.0.0.1:1/0").with_timeout(Duration::ZERO);
    let err = RedisStore::from_settings(&settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("store.timeout"), "{err}");
}
