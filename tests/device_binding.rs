//! Device-bound sessions (DBSC), driven by a protocol-level client: real ES256
//! and RS256 keys (ring), real JWTs, the layer's own registration and refresh
//! endpoints, and every way a stolen or stale credential is refused.

#![cfg(all(feature = "device-binding", feature = "test-util"))]

mod common;

#[path = "../examples/quickstart.rs"]
#[allow(dead_code, unreachable_pub)]
mod quickstart;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::Response;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};
use tower_sealed_sessions::device_binding::{
    Algorithm, DeviceBinding, TestDevice, refresh_challenge, registration_challenge,
};
use tower_sealed_sessions::{
    Keys, ManualClock, MemoryStore, Secret, Session, SessionConfig, SessionLayer,
};

const REGISTER: &str = "/.well-known/sealed-sessions/register";
const REFRESH: &str = "/.well-known/sealed-sessions/refresh";
const BOUND: &str = "id_bound";

/// The audit trail of the whole test binary.
fn audit() -> &'static common::Captured {
    static CAPTURED: OnceLock<common::Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| common::Captured::install("tower_sealed_sessions::audit=info"))
}

fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route(
            "/login/{name}",
            post(
                |session: Session, axum::extract::Path(name): axum::extract::Path<String>| async move {
                    session.cycle_id();
                    session.set_user_id(&name);
                    session.bind_device().to_string()
                },
            ),
        )
        .route(
            "/as/{name}",
            post(
                |session: Session, axum::extract::Path(name): axum::extract::Path<String>| async move {
                    session.set_user_id(&name);
                },
            ),
        )
        .route(
            "/me",
            get(|session: Option<Session>| async move {
                session
                    .and_then(|s| s.user_id())
                    .unwrap_or_else(|| "none".to_owned())
            }),
        )
        .route(
            "/logout",
            post(|session: Session| async move { session.destroy() }),
        )
        .route(
            "/logout-then-offer",
            post(|session: Session| async move {
                session.destroy();
                session.bind_device().to_string()
            }),
        )
        .route(
            "/withheld",
            get(|session: Session| async move { session.is_withheld().to_string() }),
        )
        .route(
            "/count",
            post(|session: Session| async move {
                let n = session.update("n", |n: Option<u64>| Some(n.unwrap_or(0) + 1));
                n.unwrap().unwrap().to_string()
            }),
        )
        .layer(layer)
}

fn layer(clock: &ManualClock) -> SessionLayer {
    SessionLayer::new(MemoryStore::default(), Keys::generate())
        .with_secure(false)
        .with_clock(clock.clone())
        .with_device_binding(DeviceBinding::new().with_cookie_lifetime(Duration::from_secs(60)))
}

/// A browser's cookie jar, and the device key it registers.
struct Browser {
    cookies: BTreeMap<String, String>,
    key: DeviceKey,
}

/// ES256 through the crate's own [`TestDevice`]; RS256 with ring here.
enum DeviceKey {
    Es256(TestDevice),
    Rs256(RsaKeyPair),
}

impl DeviceKey {
    fn es256() -> Self {
        DeviceKey::Es256(TestDevice::new())
    }

    /// A 2048-bit test key (tests/fixtures/dbsc-rsa2048.der, made with
    /// `openssl genpkey -algorithm RSA`, as PKCS#1 DER with `-traditional`).
    fn rs256() -> Self {
        let der = include_bytes!("fixtures/dbsc-rsa2048.der");
        DeviceKey::Rs256(RsaKeyPair::from_der(der).unwrap())
    }

    fn alg(&self) -> &'static str {
        match self {
            DeviceKey::Es256(_) => "ES256",
            DeviceKey::Rs256(_) => "RS256",
        }
    }

    fn jwk(&self) -> Value {
        match self {
            DeviceKey::Es256(device) => device.jwk(),
            DeviceKey::Rs256(key) => {
                let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(key.public());
                let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
                json!({"kty": "RSA", "n": b64(&public.n), "e": b64(&public.e)})
            }
        }
    }

    /// A `dbsc+jwt` answering `jti`, with the public key in the header when
    /// `with_key` (registration).
    fn proof(&self, jti: &str, with_key: bool) -> String {
        let mut header = json!({"alg": self.alg(), "typ": "dbsc+jwt"});
        if with_key {
            header["jwk"] = self.jwk();
        }
        let key = match self {
            DeviceKey::Es256(device) => return device.sign(header, jti),
            DeviceKey::Rs256(key) => key,
        };
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(json!({ "jti": jti }).to_string())
        );
        let mut sig = vec![0; key.public().modulus_len()];
        key.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            input.as_bytes(),
            &mut sig,
        )
        .unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

impl Browser {
    fn new(key: DeviceKey) -> Self {
        Browser {
            cookies: BTreeMap::new(),
            key,
        }
    }

    fn cookie_header(&self) -> String {
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.join("; ")
    }

    /// Sends a request with this browser's cookies and `extra` headers, and
    /// keeps the cookies the response sets or clears.
    async fn send(
        &mut self,
        app: &Router,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
    ) -> Response<axum::body::Body> {
        let cookie = self.cookie_header();
        let mut headers: Vec<(&str, &str)> = extra.to_vec();
        if !cookie.is_empty() {
            headers.push(("cookie", &cookie));
        }
        let res = common::oneshot(app, method, path, &headers).await;
        for set in res.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (name, value) = set.split(';').next().unwrap().split_once('=').unwrap();
            if set.contains("Max-Age=0") || value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        res
    }

    async fn me(&mut self, app: &Router) -> String {
        body(self.send(app, "GET", "/me", &[]).await).await
    }

    /// Logs in as `name`; returns the offered registration challenge, if any.
    async fn log_in(&mut self, app: &Router, name: &str) -> Option<String> {
        let res = self.send(app, "POST", &format!("/login/{name}"), &[]).await;
        assert_eq!(res.status(), 200);
        let offer = res.headers().get("secure-session-registration")?;
        let offer = offer.to_str().unwrap().to_owned();
        assert!(
            offer.starts_with(
                "(ES256 RS256);path=\"/.well-known/sealed-sessions/register\";challenge=\""
            ),
            "{offer}"
        );
        Some(registration_challenge(&offer).unwrap().to_owned())
    }

    /// A browser with an ES256 key, logged in as `name` and registered: it
    /// and its binding's identifier.
    async fn bound(app: &Router, name: &str) -> (Browser, String) {
        let mut browser = Browser::new(DeviceKey::es256());
        let challenge = browser.log_in(app, name).await.expect("binding offered");
        let instructions = browser.register(app, &challenge).await;
        let id = instructions["session_identifier"]
            .as_str()
            .unwrap()
            .to_owned();
        (browser, id)
    }

    /// Registers this browser's key for `challenge`; the instructions.
    async fn register(&mut self, app: &Router, challenge: &str) -> Value {
        let proof = self.key.proof(challenge, true);
        let res = self
            .send(
                app,
                "POST",
                REGISTER,
                &[("secure-session-response", &proof)],
            )
            .await;
        assert_eq!(res.status(), 200, "registration");
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(res.headers()["cache-control"], "no-store");
        let set = res.headers()["set-cookie"].to_str().unwrap().to_owned();
        assert!(
            set.starts_with("id_bound=") && set.contains("Max-Age="),
            "{set}"
        );
        serde_json::from_str(&body(res).await).unwrap()
    }

    /// A refresh with `proof` for the binding `id`.
    async fn prove(&mut self, app: &Router, id: &str, proof: &str) -> Response<axum::body::Body> {
        let headers = [
            ("sec-secure-session-id", id),
            ("secure-session-response", proof),
        ];
        self.send(app, "POST", REFRESH, &headers).await
    }

    /// A refresh asked without a proof: the response, and this browser's proof
    /// of its challenge if it got one.
    async fn refresh_or_end(
        &mut self,
        app: &Router,
        id: &str,
    ) -> (Response<axum::body::Body>, Option<String>) {
        let res = self
            .send(app, "POST", REFRESH, &[("sec-secure-session-id", id)])
            .await;
        let proof = res
            .headers()
            .get("secure-session-challenge")
            .map(|_| self.key.proof(&challenge_of(&res, id), false));
        (res, proof)
    }

    /// The refresh dance: asks, gets a challenge, proves. The final response.
    async fn refresh(&mut self, app: &Router, id: &str) -> (Response<axum::body::Body>, String) {
        let res = self
            .send(app, "POST", REFRESH, &[("sec-secure-session-id", id)])
            .await;
        assert_eq!(res.status(), 403, "a refresh without a proof is challenged");
        let challenge = challenge_of(&res, id);
        let proof = self.key.proof(&challenge, false);
        let res = self.prove(app, id, &proof).await;
        (res, proof)
    }
}

/// The challenge of a `Secure-Session-Challenge: "c";id="..."` for `id`.
fn challenge_of(res: &Response<axum::body::Body>, id: &str) -> String {
    let line = res.headers()["secure-session-challenge"].to_str().unwrap();
    let (challenge, for_id) = refresh_challenge(line).unwrap();
    assert_eq!(for_id, id, "{line}");
    challenge.to_owned()
}

async fn body(res: Response<axum::body::Body>) -> String {
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Registration, use, theft, expiry, refresh, replay, a foreign key and a
/// foreign bound cookie, each refused with its audit event.
#[tokio::test]
async fn a_bound_session_lives_only_with_its_bound_cookie() {
    let audit = audit();
    let clock = ManualClock::new();
    let app = app(layer(&clock));
    let mut ada = Browser::new(DeviceKey::es256());

    let challenge = ada.log_in(&app, "ada").await.expect("binding offered");
    let instructions = ada.register(&app, &challenge).await;
    let id = instructions["session_identifier"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(instructions["refresh_url"], REFRESH);
    assert_eq!(
        instructions["scope"],
        json!({"include_site": false}),
        "the cookie's path is the whole origin: no scope specification"
    );
    assert_eq!(
        instructions["credentials"],
        json!([{"type": "cookie", "name": BOUND, "attributes": "Path=/; HttpOnly; SameSite=Lax"}])
    );
    assert_eq!(ada.me(&app).await, "ada");

    // The long-lived cookie alone, copied off the device: no session, and
    // nothing set or cleared.
    let mut thief = Browser::new(DeviceKey::es256());
    thief.cookies.insert("id".into(), ada.cookies["id"].clone());
    let res = thief.send(&app, "GET", "/me", &[]).await;
    assert!(
        res.headers().get("set-cookie").is_none(),
        "nothing set or cleared"
    );
    assert_eq!(body(res).await, "none", "the handler sees no session");
    // Nor can the thief refresh: it holds no key, and a proof by its own key fails.
    let (res, _) = thief.refresh(&app, &id).await;
    assert_eq!(res.status(), 400, "a proof signed by another key");
    assert!(res.headers().get("set-cookie").is_none());
    assert_eq!(thief.me(&app).await, "none");
    // A write starts the thief's own, new session: ada's is left alone.
    let res = thief.send(&app, "POST", "/count", &[]).await;
    assert_eq!(body(res).await, "1", "a new, empty session");
    assert_ne!(thief.cookies["id"], ada.cookies["id"]);
    assert_eq!(ada.me(&app).await, "ada", "the real browser lost nothing");
    let res = ada.send(&app, "POST", "/count", &[]).await;
    assert_eq!(
        body(res).await,
        "1",
        "ada's count was not touched by the thief"
    );

    // The bound cookie expires (60 s, honoured a minute longer); a refresh with
    // the device key renews it.
    clock.advance(Duration::from_secs(60 + 61));
    assert_eq!(ada.me(&app).await, "none", "an expired bound cookie");
    let (res, proof) = ada.refresh(&app, &id).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("id_bound=")
    );
    let again: Value = serde_json::from_str(&body(res).await).unwrap();
    assert_eq!(again["session_identifier"], id.as_str());
    assert_eq!(ada.me(&app).await, "ada");

    // The same proof again: its challenge was used; a new one is issued.
    let res = ada.prove(&app, &id, &proof).await;
    assert_eq!(res.status(), 403, "a replayed challenge");
    challenge_of(&res, &id);

    // A challenge not answered within five minutes is stale.
    let res = ada
        .send(&app, "POST", REFRESH, &[("sec-secure-session-id", &id)])
        .await;
    let stale = challenge_of(&res, &id);
    clock.advance(Duration::from_secs(5 * 60));
    let proof = ada.key.proof(&stale, false);
    let res = ada.prove(&app, &id, &proof).await;
    assert_eq!(res.status(), 403, "a stale challenge");

    // Another user's session with ada's bound cookie: refused.
    let mut grace = Browser::new(DeviceKey::rs256());
    let challenge = grace.log_in(&app, "grace").await.unwrap();
    let grace_id = grace.register(&app, &challenge).await["session_identifier"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(grace_id, id);
    assert_eq!(grace.me(&app).await, "grace", "an RS256 device");
    let (res, _) = ada.refresh(&app, &id).await;
    assert_eq!(res.status(), 200);
    let mut mixed = Browser::new(DeviceKey::es256());
    mixed
        .cookies
        .insert("id".into(), grace.cookies["id"].clone());
    mixed
        .cookies
        .insert(BOUND.into(), ada.cookies[BOUND].clone());
    assert_eq!(
        mixed.me(&app).await,
        "none",
        "a bound cookie moved to another session"
    );

    // The browser says it could not refresh: logged, nothing granted.
    let mut skipped = Browser::new(DeviceKey::es256());
    skipped
        .cookies
        .insert("id".into(), grace.cookies["id"].clone());
    let res = skipped
        .send(
            &app,
            "GET",
            "/me",
            &[(
                "secure-session-skipped",
                &format!("unreachable;session_identifier=\"{grace_id}\""),
            )],
        )
        .await;
    assert_eq!(body(res).await, "none");

    let trail = audit.text();
    for expected in [
        "event=\"device_bound\"",
        "event=\"device_refreshed\"",
        "event=\"device_proof_failed\" outcome=\"failure\" reason=\"signature\"",
        "event=\"device_proof_failed\" outcome=\"failure\" reason=\"challenge\"",
        "event=\"device_unbound_refused\" outcome=\"failure\" reason=\"missing\"",
        "event=\"device_unbound_refused\" outcome=\"failure\" reason=\"expired\"",
        "event=\"device_unbound_refused\" outcome=\"failure\" reason=\"foreign\"",
        "event=\"device_unbound_refused\" outcome=\"failure\" reason=\"skipped_unreachable\"",
    ] {
        assert!(trail.contains(expected), "no {expected} in:\n{trail}");
    }
}

/// A registration proves possession for the challenge it was offered, once.
#[tokio::test]
async fn registrations_are_refused_unless_offered_signed_and_fresh() {
    let clock = ManualClock::new();
    let app = app(layer(&clock));
    let mut ada = Browser::new(DeviceKey::es256());
    let challenge = ada.log_in(&app, "ada").await.unwrap();
    let register = |proof: String| {
        let app = app.clone();
        let cookie = ada.cookie_header();
        async move {
            common::oneshot(
                &app,
                "POST",
                REGISTER,
                &[("cookie", &cookie), ("secure-session-response", &proof)],
            )
            .await
            .status()
        }
    };
    // Another challenge, another type, no key, a key that did not sign it.
    assert_eq!(register(ada.key.proof("made-up", true)).await, 400);
    let other = DeviceKey::es256();
    let mut forged = other.proof(&challenge, false);
    let jwk_of_ada = URL_SAFE_NO_PAD
        .encode(json!({"alg": "ES256", "typ": "dbsc+jwt", "jwk": ada.key.jwk()}).to_string());
    forged = format!("{jwk_of_ada}.{}", forged.split_once('.').unwrap().1);
    assert_eq!(
        register(forged).await,
        400,
        "signed by a key other than the one it names"
    );
    assert_eq!(
        register(ada.key.proof(&challenge, false)).await,
        400,
        "no key"
    );
    assert_eq!(register("not a jwt".to_owned()).await, 400);
    // Without a session, nothing to register.
    let res = common::oneshot(
        &app,
        "POST",
        REGISTER,
        &[("secure-session-response", &ada.key.proof(&challenge, true))],
    )
    .await;
    assert_eq!(res.status(), 400);

    // The real one works once; the same proof again does not.
    let proof = ada.key.proof(&challenge, true);
    assert_eq!(register(proof.clone()).await, 200);
    assert_eq!(register(proof).await, 400, "a replayed registration");
}

/// Browsers without DBSC never register: their sessions work as before.
#[tokio::test]
async fn a_browser_that_never_registers_keeps_todays_behaviour() {
    let clock = ManualClock::new();
    let app = app(layer(&clock));
    let mut old = Browser::new(DeviceKey::es256());
    assert!(old.log_in(&app, "ada").await.is_some(), "offered");
    assert_eq!(old.me(&app).await, "ada");
    clock.advance(Duration::from_secs(10 * 60));
    assert_eq!(old.me(&app).await, "ada", "no bound cookie needed");
    // A layer without binding offers nothing.
    let plain = app_without_binding();
    let mut browser = Browser::new(DeviceKey::es256());
    assert_eq!(browser.log_in(&plain, "ada").await, None);
    assert_eq!(browser.me(&plain).await, "ada");
    let res = common::oneshot(&plain, "POST", "/login/grace", &[]).await;
    assert_eq!(
        body(res).await,
        "false",
        "bind_device says it offered nothing"
    );
}

/// `is_withheld` tells a handler why it sees no session: a bound session whose
/// bound cookie did not come, and only that.
#[tokio::test]
async fn a_session_is_withheld_only_when_bound_and_its_bound_cookie_is_missing() {
    let clock = ManualClock::new();
    let app = app(layer(&clock));
    let withheld = |browser: &Browser| {
        let app = app.clone();
        let cookie = browser.cookie_header();
        async move {
            let res = common::oneshot(&app, "GET", "/withheld", &[("cookie", &cookie)]).await;
            body(res).await
        }
    };
    let anonymous = Browser::new(DeviceKey::es256());
    assert_eq!(withheld(&anonymous).await, "false", "no cookie at all");
    let mut offered = Browser::new(DeviceKey::es256());
    offered
        .log_in(&app, "grace")
        .await
        .expect("binding offered");
    assert_eq!(withheld(&offered).await, "false", "offered, not bound");
    let (mut ada, _) = Browser::bound(&app, "ada").await;
    assert_eq!(withheld(&ada).await, "false", "with its bound cookie");
    ada.cookies.remove(BOUND);
    assert_eq!(withheld(&ada).await, "true", "without it");
}

/// A session the handler destroyed is offered no binding: there is nothing
/// left to bind.
#[tokio::test]
async fn a_destroyed_session_is_offered_no_binding() {
    let clock = ManualClock::new();
    let app = app(layer(&clock));
    let mut ada = Browser::new(DeviceKey::es256());
    ada.log_in(&app, "ada").await.expect("binding offered");
    let res = ada.send(&app, "POST", "/logout-then-offer", &[]).await;
    assert!(res.headers().get("secure-session-registration").is_none());
    assert_eq!(body(res).await, "false");
}

/// With the session cookie on a path, the session instructions scope the
/// binding to that path (DBSC's scope rules are read last to first).
#[tokio::test]
async fn a_cookie_path_scopes_the_binding_to_it() {
    let clock = ManualClock::new();
    let layer = SessionLayer::new(MemoryStore::default(), Keys::generate())
        .with_secure(false)
        .with_clock(clock.clone())
        .with_path("/app")
        .with_device_binding(
            DeviceBinding::new()
                .with_registration_path("/app/dbsc/reg")
                .with_refresh_path("/app/dbsc/refresh"),
        );
    let app = app(layer);
    let device = TestDevice::new();
    let res = common::oneshot(&app, "POST", "/login/ada", &[]).await;
    let offer = res.headers()["secure-session-registration"]
        .to_str()
        .unwrap()
        .to_owned();
    let session = common::set_cookie_pair(&res).unwrap();
    let proof = device.registration_proof(registration_challenge(&offer).unwrap());
    let res = common::oneshot(
        &app,
        "POST",
        "/app/dbsc/reg",
        &[("cookie", &session), ("secure-session-response", &proof)],
    )
    .await;
    assert_eq!(res.status(), 200);
    let instructions: Value = serde_json::from_str(&body(res).await).unwrap();
    assert_eq!(instructions["refresh_url"], "/app/dbsc/refresh");
    assert_eq!(
        instructions["scope"],
        json!({
            "include_site": false,
            "scope_specification": [
                { "type": "exclude", "domain": "*", "path": "/" },
                { "type": "include", "domain": "*", "path": "/app" },
            ],
        })
    );
    assert_eq!(
        instructions["credentials"][0]["attributes"],
        "Path=/app; HttpOnly; SameSite=Lax"
    );
}

fn app_without_binding() -> Router {
    app(SessionLayer::new(MemoryStore::default(), Keys::generate()).with_secure(false))
}

/// A refresh for a session that is gone tells the browser to stop.
#[tokio::test]
async fn a_refresh_for_an_ended_session_ends_the_browsers_binding() {
    let clock = ManualClock::new();
    let app = app(layer(&clock));
    let (mut ada, id) = Browser::bound(&app, "ada").await;
    ada.cookies.remove("id");
    let res = ada
        .send(&app, "POST", REFRESH, &[("sec-secure-session-id", &id)])
        .await;
    assert_eq!(res.status(), 401);
    let answer: Value = serde_json::from_str(&body(res).await).unwrap();
    assert_eq!(answer, json!({"session_identifier": id, "continue": false}));
}

/// `device_binding: {}` turns it on with the defaults; every setting is read
/// and checked.
#[test]
fn the_configuration_section() {
    let secret = "base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz";
    let build = |section: &str| {
        let config: SessionConfig =
            serde_yaml_ng::from_str(&format!("secret: \"{secret}\"\n{section}")).unwrap();
        SessionLayer::from_config(&config, MemoryStore::default())
    };
    let on = build("device_binding: {}").unwrap();
    assert_eq!(on.device_binding(), Some(&DeviceBinding::new()));
    assert_eq!(build("").unwrap().device_binding(), None);
    let custom = build(
        "device_binding: { registration_path: /dbsc/reg, refresh_path: /dbsc/refresh, \
         cookie_name: dev, cookie_lifetime: 2m, algorithms: [ES256], offer_on_cycle_id: true }",
    )
    .unwrap();
    assert_eq!(
        custom.device_binding(),
        Some(
            &DeviceBinding::new()
                .with_registration_path("/dbsc/reg")
                .with_refresh_path("/dbsc/refresh")
                .with_cookie_name("dev")
                .with_cookie_lifetime(Duration::from_secs(120))
                .with_algorithms([Algorithm::Es256])
                .with_offer_on_cycle_id(true)
        )
    );
    let err = build(
        "device_binding: { registration_path: nope, refresh_path: nope, cookie_lifetime: 1s, \
         algorithms: [], cookie_name: id }\nheader: { name: x-session }",
    )
    .unwrap_err();
    let fields: Vec<&str> = err.errors().map(|e| e.field()).collect();
    assert_eq!(
        fields,
        [
            "device_binding",
            "device_binding.registration_path",
            "device_binding.refresh_path",
            "device_binding.refresh_path",
            "device_binding.cookie_lifetime",
            "device_binding.algorithms",
            "device_binding.cookie_name",
        ],
        "{err}"
    );
    let err = build("device_binding: {}\ncookie: { domain: example.com, path: /app }").unwrap_err();
    let fields: Vec<&str> = err.errors().map(|e| e.field()).collect();
    assert_eq!(
        fields,
        [
            "device_binding.registration_path",
            "device_binding.refresh_path",
            "device_binding",
        ],
        "the default paths are not under /app, and a Domain widens the cookie: {err}"
    );
    build("device_binding: { registration_path: /app/dbsc/reg, refresh_path: /app/dbsc/refresh }\ncookie: { path: /app }")
        .unwrap();
    let unknown = serde_yaml_ng::from_str::<SessionConfig>(&format!(
        "secret: \"{secret}\"\ndevice_binding: {{ lifespan: 5m }}"
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(unknown.contains("lifespan"), "{unknown}");
    // The names the protocol's own words suggest are read too.
    let aliased = build(
        "device_binding: { bound_cookie_name: dev, bound_cookie_lifetime: 2m, \
         allowed_algorithms: [ES256] }",
    )
    .unwrap();
    let binding = aliased.device_binding().unwrap();
    assert_eq!(
        binding,
        &DeviceBinding::new()
            .with_cookie_name("dev")
            .with_cookie_lifetime(Duration::from_secs(120))
            .with_algorithms([Algorithm::Es256])
    );
}

/// With `offer_on_cycle_id`, every login offers binding without the handler
/// asking.
#[tokio::test]
async fn offered_on_every_login_when_configured() {
    let layer = SessionLayer::new(MemoryStore::default(), Keys::generate())
        .with_secure(false)
        .with_device_binding(DeviceBinding::new().with_offer_on_cycle_id(true));
    let app = Router::new()
        .route(
            "/login",
            post(|session: Session| async move {
                session.cycle_id();
                session.set_user_id("ada");
            }),
        )
        .layer(layer);
    let res = common::oneshot(&app, "POST", "/login", &[]).await;
    assert!(res.headers().contains_key("secure-session-registration"));
}

/// Two refreshes racing with one proof (its challenge read by both before
/// either wrote): one gets the bound cookie, the other a 503 and nothing.
#[tokio::test]
async fn a_challenge_raced_by_two_requests_is_used_once() {
    let audit = audit();
    let store = common::TestStore::new(MemoryStore::default());
    let layer = SessionLayer::new(store.clone(), Keys::generate())
        .with_secure(false)
        .with_device_binding(DeviceBinding::new());
    let app = app(layer);
    let (mut ada, id) = Browser::bound(&app, "ada").await;
    let res = ada
        .send(&app, "POST", REFRESH, &[("sec-secure-session-id", &id)])
        .await;
    let proof = ada.key.proof(&challenge_of(&res, &id), false);
    let cookie = ada.cookie_header();
    let refresh = |app: Router, cookie: String, id: String, proof: String| async move {
        common::oneshot(
            &app,
            "POST",
            REFRESH,
            &[
                ("cookie", &cookie),
                ("sec-secure-session-id", &id),
                ("secure-session-response", &proof),
            ],
        )
        .await
    };
    // The first one's write waits until the second one has written.
    let gate = store.pause_before("update");
    let first = tokio::spawn(refresh(
        app.clone(),
        cookie.clone(),
        id.clone(),
        proof.clone(),
    ));
    // Bounded, so that a first refresh refused before its write fails this
    // test instead of hanging it.
    tokio::time::timeout(Duration::from_secs(5), gate.reached.notified())
        .await
        .expect("the first refresh reaches its write");
    let second = refresh(app.clone(), cookie, id, proof).await;
    gate.release.notify_one();
    let first = first.await.unwrap();
    let mut statuses = [first.status().as_u16(), second.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 503]);
    let with_cookie = [&first, &second]
        .iter()
        .filter(|res| res.headers().contains_key("set-cookie"))
        .count();
    assert_eq!(with_cookie, 1, "one bound cookie handed out");
    let trail = audit.text();
    assert!(
        trail.contains("event=\"device_proof_failed\" outcome=\"failure\" reason=\"not_saved\""),
        "the loser is audited as a failure:\n{trail}"
    );
}

/// The quickstart offers binding at login when its configuration has a
/// `device_binding:` section (examples/session-dbsc.yaml), and its sessions
/// then need the bound cookie.
#[tokio::test]
async fn the_quickstart_offers_binding_with_its_dbsc_configuration() {
    let dir = std::env::temp_dir().join(format!("tss-dbsc-{:016x}", rand::random::<u64>()));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/session-dbsc.yaml");
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("target/", &format!("{}/", dir.display()));
    let config: SessionConfig = serde_yaml_ng::from_str(&text).unwrap();
    let layer = config.build().await.unwrap().spawn_cleanup();
    let app = quickstart::app(layer);
    let device = TestDevice::new();

    let res = common::oneshot(
        &app,
        "POST",
        "/api/login",
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(res.status(), 422, "a login needs its body");
    let login = http::Request::post("/api/login")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(r#"{"username": "ada"}"#))
        .unwrap();
    let res = tower::ServiceExt::oneshot(app.clone(), login)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let offer = res.headers()["secure-session-registration"]
        .to_str()
        .unwrap();
    let proof = device.registration_proof(registration_challenge(offer).unwrap());
    let session = common::set_cookie_pair(&res).unwrap();
    let res = common::oneshot(
        &app,
        "POST",
        REGISTER,
        &[("cookie", &session), ("secure-session-response", &proof)],
    )
    .await;
    assert_eq!(res.status(), 200);
    let bound = common::set_cookie_pair(&res).unwrap();
    assert!(bound.starts_with("id_bound="));

    let both = format!("{session}; {bound}");
    let res = common::oneshot(&app, "GET", "/api/me", &[("cookie", &both)]).await;
    assert_eq!(body(res).await, "\"ada\"");
    let res = common::oneshot(&app, "GET", "/api/me", &[("cookie", &session)]).await;
    assert_eq!(body(res).await, "null", "the session cookie alone: no user");
    let page = body(common::oneshot(&app, "GET", "/", &[("cookie", &both)]).await).await;
    assert!(
        page.contains("Device binding (DBSC) is on"),
        "the page says so"
    );
    // Views sent without the bound cookie (a refresh skipped or still under
    // way) are withheld their session and write nothing: no new session's
    // cookie replaces the bound one, and the user stays logged in.
    for path in ["/", "/api/session"] {
        let res = common::oneshot(&app, "GET", path, &[("cookie", &session)]).await;
        assert_eq!(res.status(), 200, "{path}");
        assert!(
            res.headers().get("set-cookie").is_none(),
            "{path}: a withheld view sets no cookie"
        );
    }
    let res = common::oneshot(&app, "GET", "/api/me", &[("cookie", &both)]).await;
    assert_eq!(body(res).await, "\"ada\"", "still logged in");
    std::fs::remove_dir_all(dir).ok();
}

/// A browser that lost its key (or a request without the bound cookie) is not
/// locked out: logging in starts a new session, and logging out clears the
/// cookie. The bound session itself is left alone.
#[tokio::test]
async fn a_browser_without_its_key_can_log_in_again() {
    let clock = ManualClock::new();
    let app = app(layer(&clock));
    let (mut ada, _) = Browser::bound(&app, "ada").await;
    let bound_session = ada.cookies["id"].clone();

    let mut lost = Browser::new(DeviceKey::es256());
    lost.cookies.insert("id".into(), bound_session.clone());
    assert_eq!(lost.me(&app).await, "none");
    assert!(
        lost.log_in(&app, "ada").await.is_some(),
        "a new login, offered binding"
    );
    assert_ne!(lost.cookies["id"], bound_session, "a new session");
    assert_eq!(lost.me(&app).await, "ada");

    let mut leaving = Browser::new(DeviceKey::es256());
    leaving.cookies.insert("id".into(), bound_session);
    let res = leaving.send(&app, "POST", "/logout", &[]).await;
    let set = res.headers()["set-cookie"].to_str().unwrap();
    assert!(set.starts_with("id=;"), "logout clears the cookie: {set}");
    assert_eq!(
        ada.me(&app).await,
        "ada",
        "the bound session lives on its device"
    );
}

/// Junk cookies named like the bound cookie (tossed by a sibling subdomain)
/// do not hide the real one.
#[tokio::test]
async fn tossed_bound_cookies_do_not_hide_the_real_one() {
    let clock = ManualClock::new();
    let app = app(layer(&clock));
    let (ada, _) = Browser::bound(&app, "ada").await;
    let mut tossed: Vec<String> = (0..10).map(|i| format!("{BOUND}=junk{i}")).collect();
    tossed.push(format!("id={}", ada.cookies["id"]));
    tossed.push(format!("{BOUND}={}", ada.cookies[BOUND]));
    let cookie = tossed.join("; ");
    let res = common::oneshot(&app, "GET", "/me", &[("cookie", &cookie)]).await;
    assert_eq!(body(res).await, "ada");
}

/// A cookie thief asking the refresh endpoint for challenges is no activity of
/// the session's: it idles out as if nobody came.
#[tokio::test]
async fn asking_for_challenges_keeps_no_session_alive() {
    let clock = ManualClock::new();
    let layer = layer(&clock).with_idle_timeout(Some(Duration::from_secs(10 * 60)));
    let app = app(layer);
    let (mut ada, id) = Browser::bound(&app, "ada").await;
    let mut thief = Browser::new(DeviceKey::es256());
    thief.cookies.insert("id".into(), ada.cookies["id"].clone());
    for _ in 0..2 {
        clock.advance(Duration::from_secs(4 * 60));
        let res = thief
            .send(&app, "POST", REFRESH, &[("sec-secure-session-id", &id)])
            .await;
        assert_eq!(res.status(), 403, "a new challenge each time");
        challenge_of(&res, &id);
    }
    // Each of those wrote a challenge; had that slid the idle deadline, the
    // session would live to minute 18.
    clock.advance(Duration::from_secs(4 * 60));
    // Twelve minutes without the device: past the 10-minute idle timeout.
    let (res, _) = ada.refresh_or_end(&app, &id).await;
    assert_eq!(res.status(), 401, "the session idled out");
    let answer: Value = serde_json::from_str(&body(res).await).unwrap();
    assert_eq!(answer["continue"], false);
}

/// After a key rotation, a thief holding only the session cookie (sealed under
/// the previous key) gets nothing out of the device-binding endpoints: the
/// rotation's move to a new id is the session's activity, which a request
/// that proves nothing is not. The store is left as it was, no cookie is set,
/// and the real browser keeps its session.
#[tokio::test]
async fn a_thief_cannot_move_a_bound_session_after_a_key_rotation() {
    let clock = ManualClock::new();
    let store = MemoryStore::default();
    let (old, new) = (Secret::generate(), Secret::generate());
    let with_keys = |keys: Keys| {
        app(SessionLayer::new(store.clone(), keys)
            .with_secure(false)
            .with_clock(clock.clone())
            .with_device_binding(
                DeviceBinding::new().with_cookie_lifetime(Duration::from_secs(60)),
            ))
    };
    let before = with_keys(Keys::new(&old));
    let (mut ada, id) = Browser::bound(&before, "ada").await;
    let after = with_keys(Keys::new(&new).with_previous(&old));
    clock.advance(Duration::from_secs(10 * 60));
    let stored = store.dump();

    let mut thief = Browser::new(DeviceKey::es256());
    thief.cookies.insert("id".into(), ada.cookies["id"].clone());
    let stolen = thief.cookies["id"].clone();
    // No proof at all, at each endpoint; then a proof by the thief's own key.
    for (path, headers) in [
        (REFRESH, vec![]),
        (REGISTER, vec![]),
        (REGISTER, vec![("secure-session-response", "a.b.c")]),
        (REFRESH, vec![("sec-secure-session-id", "not-the-id")]),
    ] {
        let res = thief.send(&after, "POST", path, &headers).await;
        assert!(res.status().is_client_error(), "{path}: {}", res.status());
        assert!(
            res.headers().get("set-cookie").is_none(),
            "{path} {headers:?}: no cookie for the thief"
        );
        assert!(
            store.dump() == stored,
            "{path} {headers:?}: the store is as it was"
        );
    }
    // With the binding's id, the thief gets a challenge to sign (the record
    // keeps it), but neither a cookie nor a later idle deadline.
    let (res, _) = thief.refresh(&after, &id).await;
    assert_eq!(res.status(), 400, "a proof by another key");
    assert!(res.headers().get("set-cookie").is_none());
    let now = store.dump();
    assert_eq!(now.len(), 1, "no second record");
    assert_eq!(now[0].0, stored[0].0, "same store key: not moved");
    assert_eq!(now[0].1.deadlines, stored[0].1.deadlines, "nothing slid");
    assert_eq!(
        thief.cookies["id"], stolen,
        "the thief's cookie is still the old one"
    );

    // The real browser proves its key (its bound cookie expired meanwhile),
    // and that moves the session to the new key.
    let (res, _) = ada.refresh(&after, &id).await;
    assert_eq!(res.status(), 200);
    assert_eq!(ada.me(&after).await, "ada");
    assert_ne!(ada.cookies["id"], stolen, "re-sealed under the new key");
    assert_eq!(thief.me(&after).await, "none");
}

/// Login fixation with a device binding: an attacker binds a session to their
/// own key and plants its cookies (the session's and the bound one) in the
/// victim's browser. The victim's login drops that binding and its bound
/// cookie, and the offer goes afresh to the victim's browser; the attacker,
/// copying the victim's session cookie later, can refresh nothing with their
/// key. A binding only offered to the attacker (a challenge they hold) is
/// dropped the same way.
#[tokio::test]
async fn a_device_binding_planted_before_login_is_dropped_by_it() {
    let clock = ManualClock::new();
    let app = app(layer(&clock));
    let (mallory, planted_id) = Browser::bound(&app, "mallory").await;

    let mut victim = Browser::new(DeviceKey::es256());
    victim.cookies = mallory.cookies.clone();
    assert_eq!(
        victim.me(&app).await,
        "mallory",
        "the plant works before login"
    );
    let res = victim.send(&app, "POST", "/login/ada", &[]).await;
    let cleared: Vec<&str> = res
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("id_bound=;") && c.contains("Max-Age=0")),
        "the planted bound cookie is cleared: {cleared:?}"
    );
    let offer = res
        .headers()
        .get("secure-session-registration")
        .expect("binding offered afresh to the browser that logged in");
    let challenge = registration_challenge(offer.to_str().unwrap())
        .unwrap()
        .to_owned();
    assert_eq!(body(res).await, "true", "bind_device offered");
    assert!(!victim.cookies.contains_key(BOUND));
    let instructions = victim.register(&app, &challenge).await;
    let victim_id = instructions["session_identifier"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(victim_id, planted_id);
    assert_eq!(victim.me(&app).await, "ada");

    // Later the attacker copies the victim's session cookie and refreshes it
    // with their own key, under either binding id: nothing.
    let mut attacker = Browser {
        cookies: BTreeMap::from([("id".to_owned(), victim.cookies["id"].clone())]),
        key: mallory.key,
    };
    let (res, _) = attacker.refresh_or_end(&app, &planted_id).await;
    assert_eq!(res.status(), 401, "the planted binding is gone");
    let (res, _) = attacker.refresh(&app, &victim_id).await;
    assert_eq!(
        res.status(),
        400,
        "the victim's binding is the victim's key's"
    );
    assert!(res.headers().get("set-cookie").is_none());
    assert_eq!(attacker.me(&app).await, "none");
    assert_eq!(victim.me(&app).await, "ada", "the victim lost nothing");

    // Only offered: the attacker holds a registration challenge of the
    // planted session, which the victim's login makes worthless.
    let mut mallory = Browser::new(DeviceKey::es256());
    let held = mallory.log_in(&app, "mallory").await.unwrap();
    let mut victim = Browser::new(DeviceKey::es256());
    victim.cookies = mallory.cookies.clone();
    let challenge = victim.log_in(&app, "grace").await.unwrap();
    assert_ne!(challenge, held);
    let mut attacker = Browser {
        cookies: victim.cookies.clone(),
        key: mallory.key,
    };
    let proof = attacker.key.proof(&held, true);
    let res = attacker
        .send(
            &app,
            "POST",
            REGISTER,
            &[("secure-session-response", &proof)],
        )
        .await;
    assert_eq!(
        res.status(),
        400,
        "the attacker's challenge went with the login"
    );
    victim.register(&app, &challenge).await;
    assert_eq!(victim.me(&app).await, "grace");
}

/// A change of user without a new id is a privilege change too: the binding
/// and its bound cookie go.
#[tokio::test]
async fn a_change_of_user_drops_the_binding() {
    let clock = ManualClock::new();
    let app = app(layer(&clock));
    let (mut ada, id) = Browser::bound(&app, "ada").await;
    let res = ada.send(&app, "POST", "/as/ada", &[]).await;
    assert!(
        res.headers().get("set-cookie").is_none(),
        "the same user: kept"
    );
    assert!(ada.cookies.contains_key(BOUND));
    let res = ada.send(&app, "POST", "/as/grace", &[]).await;
    let set = res.headers()["set-cookie"].to_str().unwrap();
    assert!(
        set.starts_with("id_bound=;") && set.contains("Max-Age=0"),
        "{set}"
    );
    assert!(!ada.cookies.contains_key(BOUND));
    let (res, _) = ada.refresh_or_end(&app, &id).await;
    assert_eq!(res.status(), 401, "no binding left to refresh");
    assert_eq!(ada.me(&app).await, "grace");
}
