//! Several cookie domains in one layer (`cookies:` in the file,
//! `SessionLayer::with_cookie_domains` in code): the host picks the entry, each
//! entry falls back to the top level, a host under no listed domain gets no
//! session, and a cookie does not move between domains.

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use common::{oneshot, set_cookie_pair};
use tower_sealed_sessions::{
    CookieDomain, Keys, ManualClock, MemoryStore, Session, SessionConfig, SessionLayer,
};

const SECRET_B64: &str = "base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz";

/// The issue's example, with a top level the entries fall back to.
const FILE: &str = r#"
secret: "base64:c2Vzc2lvbiBzZWNyZXQgb2YgbW9yZSB0aGFuIDMyIGJ5dGVz"
cookie: { secure: true, same_site: strict }
idle_timeout: 10m
lifespan: 12h
cookies:
  - { domain: example.com, name: id, same_site: lax, idle_timeout: 30m, lifespan: 1d, remember_me: 30d }
  - { domain: example.org, name: id_org, idle_timeout: 5m }
"#;

fn app(layer: SessionLayer) -> Router {
    Router::new()
        .route(
            "/count",
            get(|session: Session| async move {
                let n = session
                    .update("n", |n: Option<u64>| Some(n.unwrap_or(0) + 1))
                    .unwrap()
                    .unwrap();
                n.to_string()
            }),
        )
        .route(
            "/maybe",
            get(|session: Option<Session>| async move {
                match session {
                    Some(_) => "session",
                    None => "none",
                }
            }),
        )
        .layer(layer)
}

fn from_file(clock: &ManualClock) -> SessionLayer {
    let config: SessionConfig = serde_yaml_ng::from_str(FILE).unwrap();
    SessionLayer::from_config(&config, MemoryStore::default())
        .unwrap()
        .with_clock(clock.clone())
}

/// `GET /count` for `host`, sending `cookie`: the count the page answers.
async fn count(app: &Router, host: &str, cookie: &str) -> String {
    body(oneshot(app, "GET", "/count", &[("host", host), ("cookie", cookie)]).await).await
}

async fn body(res: http::Response<axum::body::Body>) -> String {
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 16)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn the_host_picks_the_entry_and_each_falls_back_to_the_top_level() {
    let clock = ManualClock::new();
    let app = app(from_file(&clock));

    // example.com and its subdomains: the first entry's cookie and settings.
    let res = oneshot(&app, "GET", "/count", &[("host", "www.Example.com:8443")]).await;
    assert_eq!(res.status(), 200);
    let set = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.starts_with("id="), "{set}");
    assert!(set.contains("Domain=example.com"), "{set}");
    assert!(set.contains("SameSite=Lax"), "the entry's own: {set}");
    assert!(set.contains("Secure"), "the top level's: {set}");
    let com = set_cookie_pair(&res).unwrap();

    // example.org: its own name and idle timeout, the top level's SameSite.
    let res = oneshot(&app, "GET", "/count", &[("host", "example.org")]).await;
    let set = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.starts_with("id_org="), "{set}");
    assert!(set.contains("Domain=example.org"), "{set}");
    assert!(set.contains("SameSite=Strict"), "the top level's: {set}");
    let org = set_cookie_pair(&res).unwrap();

    // Six minutes idle: past example.org's 5m, within example.com's 30m.
    clock.advance(Duration::from_secs(6 * 60));
    assert_eq!(
        count(&app, "example.com", &com).await,
        "2",
        "example.com's session lives on"
    );
    assert_eq!(
        count(&app, "example.org", &org).await,
        "1",
        "example.org's session idled out"
    );

    // Thirteen hours on: past the top level's 12h lifespan, within 1d.
    for _ in 0..26 {
        clock.advance(Duration::from_secs(29 * 60));
        count(&app, "example.com", &com).await;
    }
    assert_eq!(
        count(&app, "example.com", &com).await,
        "29",
        "example.com's lifespan is its own 1d"
    );
}

#[tokio::test]
async fn a_host_under_no_listed_domain_gets_no_session() {
    let clock = ManualClock::new();
    let app = app(from_file(&clock));
    let res = oneshot(&app, "GET", "/count", &[("host", "example.com")]).await;
    let com = set_cookie_pair(&res).unwrap();

    for headers in [
        vec![("host", "example.net")],
        vec![("host", "badexample.com")],
        vec![("host", "example.com.evil.net"), ("cookie", com.as_str())],
        vec![("host", "127.0.0.1:3000"), ("cookie", com.as_str())],
        vec![],
    ] {
        let res = oneshot(&app, "GET", "/count", &headers).await;
        assert_eq!(res.status(), 421, "{headers:?}");
        assert!(res.headers().get("set-cookie").is_none(), "{headers:?}");
        let res = oneshot(&app, "GET", "/maybe", &headers).await;
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("set-cookie").is_none(), "{headers:?}");
        assert_eq!(body(res).await, "none", "{headers:?}");
    }
    // The session on example.com was neither read nor ended by any of that.
    assert_eq!(count(&app, "example.com", &com).await, "2");
}

#[tokio::test]
async fn a_cookie_does_not_move_between_domains_even_under_the_same_name() {
    let layer = SessionLayer::new(MemoryStore::default(), Keys::generate()).with_cookie_domains([
        CookieDomain::new("example.com"),
        CookieDomain::new("example.org"),
        CookieDomain::new("app.example.com").with_cookie_name("app"),
    ]);
    let app = app(layer);
    let res = oneshot(&app, "GET", "/count", &[("host", "example.com")]).await;
    let com = set_cookie_pair(&res).unwrap();
    assert!(com.starts_with("id="));

    // The same cookie name on example.org: refused and cleared there, a fresh
    // session instead.
    let res = oneshot(
        &app,
        "GET",
        "/count",
        &[("host", "example.org"), ("cookie", &com)],
    )
    .await;
    let set = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(set.contains("Domain=example.org"), "{set}");
    assert_eq!(body(res).await, "1");

    // The longest listed domain wins: app.example.com has its own cookie.
    let res = oneshot(&app, "GET", "/count", &[("host", "x.app.example.com")]).await;
    let set = res.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        set.starts_with("app=") && set.contains("Domain=app.example.com"),
        "{set}"
    );

    // And example.com's session is intact.
    assert_eq!(count(&app, "example.com", &com).await, "2");
}

#[tokio::test]
async fn over_http_the_host_header_picks_the_domain() {
    let layer = SessionLayer::new(MemoryStore::default(), Keys::generate())
        .with_secure(false)
        .with_cookie_domains([CookieDomain::new("localhost")]);
    let base = common::serve(app(layer)).await;
    // `base` is http://127.0.0.1:PORT: an IP address under no listed domain.
    let client = reqwest::Client::new();
    let res = client.get(format!("{base}/count")).send().await.unwrap();
    assert_eq!(res.status(), 421);
    let port = base.rsplit(':').next().unwrap();
    let res = client
        .get(format!("{base}/count"))
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(common::cookie_pair(&res).starts_with("id="));
}

/// Every mistake in the list at once, each naming its entry and field; what the
/// top level gets wrong is reported once, not again for every entry.
#[test]
fn mistakes_in_the_list_name_the_entry() {
    let config: SessionConfig = serde_yaml_ng::from_str(&format!(
        r#"
secret: "{SECRET_B64}"
lifespan: 0s
cookie: {{ domain: example.com }}
cookies:
  - {{ domain: "exa mple.com" }}
  - {{ domain: example.org, name: "a;b", idle_timeout: 2d }}
  - {{ domain: Example.org }}
"#
    ))
    .unwrap();
    let err = SessionLayer::from_config(&config, MemoryStore::default()).unwrap_err();
    let fields: Vec<&str> = err.errors().map(|e| e.field()).collect();
    assert_eq!(
        fields,
        [
            "lifespan",
            "cookie.domain",
            "cookies[0].domain",
            "cookies[1].name",
            "cookies[2].domain",
        ],
        "{err}"
    );
    let shown = err.to_string();
    assert!(
        shown.contains("\"exa mple.com\" is not a host name"),
        "{shown}"
    );
    assert!(shown.contains("example.org is listed twice"), "{shown}");

    // An unknown key in an entry is refused by name.
    let unknown = serde_yaml_ng::from_str::<SessionConfig>(&format!(
        "secret: \"{SECRET_B64}\"\ncookies: [{{ domain: a.com, inactivty: 5m }}]\n"
    ))
    .err()
    .unwrap()
    .to_string();
    assert!(unknown.contains("inactivty"), "{unknown}");
}

#[test]
fn a_layer_built_in_code_hears_of_its_methods() {
    let err = SessionLayer::new(MemoryStore::default(), Keys::generate())
        .with_domain("example.com")
        .with_cookie_domains([CookieDomain::new("example.org").with_lifespan(Some(Duration::ZERO))])
        .validate()
        .unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("`cookie.domain` (`with_domain`): with several cookie domains"),
        "{shown}"
    );
    assert!(
        shown.contains("`cookies[0].lifespan` (`with_cookie_domains[0]: CookieDomain::with_lifespan`): 0 would end every session at once; disable it with None"),
        "{shown}"
    );
    // The field stays the file's name for programs that match on it.
    assert_eq!(err.field(), "cookie.domain");
}

#[test]
fn a_header_carrier_is_refused_with_several_domains() {
    let err = SessionLayer::new(MemoryStore::default(), Keys::generate())
        .with_header("x-session")
        .with_cookie_domains([CookieDomain::new("example.org")])
        .validate()
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("`cookies` (`with_cookie_domains`)"),
        "{err}"
    );
}

/// A request that names two hosts (an absolute-form URI and a `Host` that
/// differ, or two `Host` headers) gets no session: handlers routing by `Host`
/// would see another host than the session's.
#[tokio::test]
async fn a_request_naming_two_hosts_gets_no_session() {
    let clock = ManualClock::new();
    let app = app(from_file(&clock));
    let res = oneshot(&app, "GET", "/count", &[("host", "example.org")]).await;
    let org = set_cookie_pair(&res).unwrap();
    let res = oneshot(
        &app,
        "GET",
        "http://example.org/count",
        &[("host", "example.com"), ("cookie", &org)],
    )
    .await;
    assert_eq!(res.status(), 421, "authority and Host differ");
    let res = oneshot(
        &app,
        "GET",
        "/count",
        &[
            ("host", "example.org"),
            ("host", "example.com"),
            ("cookie", &org),
        ],
    )
    .await;
    assert_eq!(res.status(), 421, "two Host headers");
    let res = oneshot(
        &app,
        "GET",
        "http://EXAMPLE.org/count",
        &[("host", "example.org:443"), ("cookie", &org)],
    )
    .await;
    assert_eq!(body(res).await, "2", "the same host, written twice");
}

/// An entry under another with the same cookie name would get the other's
/// cookie on every request; a single label or an address is no cookie domain.
#[test]
fn nested_entries_need_names_of_their_own_and_domains_must_be_names() {
    let err = SessionLayer::new(MemoryStore::default(), Keys::generate())
        .with_cookie_domains([
            CookieDomain::new("example.com"),
            CookieDomain::new("app.example.com"),
            CookieDomain::new("com"),
            CookieDomain::new("10.0.0.1"),
        ])
        .validate()
        .unwrap_err();
    let fields: Vec<&str> = err.errors().map(|e| e.field()).collect();
    assert_eq!(
        fields,
        ["cookies[1].name", "cookies[2].domain", "cookies[3].domain"],
        "{err}"
    );
    assert!(
        err.to_string().contains("give it a cookie name of its own"),
        "{err}"
    );
    SessionLayer::new(MemoryStore::default(), Keys::generate())
        .with_cookie_domains([
            CookieDomain::new("example.com."),
            CookieDomain::new("app.example.com").with_cookie_name("app"),
        ])
        .validate()
        .unwrap();
}
