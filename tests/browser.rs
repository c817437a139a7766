//! The quickstart page in headless Chromium, driven over WebDriver: a person's
//! login and logout through the page's own forms and script, and what the browser
//! keeps of the session cookie.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the test fails when
//! `CI` is set, and otherwise skips with a printed reason. It starts its own
//! `chromedriver` on a free loopback port, with a fresh profile, and stops it when
//! done.

mod common;

#[path = "../examples/quickstart.rs"]
#[allow(dead_code, unreachable_pub)]
mod quickstart;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cookie::SameSite;
use fantoccini::cookies::Cookie;
use fantoccini::wd::{Capabilities, TimeoutConfiguration};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tower_sealed_sessions::{Keys, MemoryStore, SessionLayer};

/// The layer's default cookie name.
const COOKIE: &str = "id";
/// The layer's default remember-me lifetime.
const REMEMBER_ME: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest any single wait in the test may take.
const WAIT: Duration = Duration::from_secs(10);
/// The longest Chromium may take to start.
const BROWSER_START: Duration = Duration::from_secs(60);
/// The longest the whole browser scenario may take.
const SCENARIO_LIMIT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(25);

/// Chromium's flags: headless, and nothing that reaches for the network on its own
/// (this machine has none, and Chromium stalls or fails waiting for it).
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
];

const NOT_LOGGED_IN: &str = "Not logged in.";

#[tokio::test]
async fn quickstart_page_in_chromium() {
    let layer = SessionLayer::new(MemoryStore::default(), Keys::generate()).with_secure(false);
    let base = common::serve(quickstart::app(layer)).await;
    in_chromium(|client| async move {
        login_logout(&client, &base).await;
        remember_me(&client, &base).await;
    })
    .await;
}

/// Runs `scenario` on a fresh headless Chromium, or skips (outside CI) when
/// Chromium is missing. The scenario runs as its own task so that the browser
/// is closed even when an assertion fails, and within a time limit so that a
/// hung browser fails the test.
async fn in_chromium<F, Fut>(scenario: F)
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let Some(programs) = Programs::find() else {
        return;
    };
    let scratch = Scratch::new();
    let driver = Driver::start(&programs.chromedriver, &scratch.path).await;
    let client = connect(&driver, &programs.chromium, &scratch.path.join("profile")).await;

    let scenario = tokio::spawn(scenario(client.clone()));
    let abort = scenario.abort_handle();
    let outcome = tokio::time::timeout(SCENARIO_LIMIT, scenario).await;
    abort.abort();
    // Ending the WebDriver session quits Chromium.
    let closed = tokio::time::timeout(WAIT, client.close()).await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(err)) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Ok(Err(err)) => panic!("the browser scenario did not finish: {err}"),
        Err(_) => panic!(
            "the browser scenario took over {SCENARIO_LIMIT:?}; chromedriver's log:\n{}",
            driver.log()
        ),
    }
    match closed {
        Ok(Ok(())) => {}
        Ok(Err(err)) => panic!("closing the browser session: {err}"),
        Err(_) => panic!("closing the browser session took over {WAIT:?}"),
    }
}

/// The demo as it ships (`Secure` on): the page explains itself, shows the
/// sealed cookie, the store's sealed record and the handler's data, lists the
/// user's devices and ends another one, and asks to extend a session near the
/// end of its lifespan. Screenshots go to `target/tmp/screenshots/`.
#[tokio::test]
async fn the_demo_page_teaches_in_chromium() {
    let base = common::serve(quickstart::app(quickstart::default_sessions())).await;
    // Lifespan short enough to see the prompt: it shows in the last half.
    let short = quickstart::default_sessions()
        .with_idle_timeout(None)
        .with_lifespan(Some(Duration::from_secs(12)));
    let short_base = common::serve(quickstart::app(short)).await;
    in_chromium(|client| async move {
        client
            .set_window_size(1280, 2600)
            .await
            .expect("size the window");
        demo_panels(&client, &base).await;
        demo_devices(&client, &base).await;
        client.delete_all_cookies().await.expect("clear cookies");
        demo_extend(&client, &short_base).await;
    })
    .await;
}

/// The first view, a reload, a login: what each panel says.
async fn demo_panels(client: &Client, base: &str) {
    client
        .goto(&format!("{base}/"))
        .await
        .expect("open the page");
    let tries = client
        .find_all(Locator::Css("#try li"))
        .await
        .expect("the list of things to try");
    assert!(tries.len() >= 5, "{} things to try", tries.len());
    let first_view = text_of(client, "cookie-value").await;
    assert!(first_view.starts_with("(none yet"), "{first_view}");
    assert!(
        text_of(client, "store-bytes")
            .await
            .contains("nothing is stored")
    );
    client.refresh().await.expect("reload");
    assert!(
        session_cookie(client).await.is_none(),
        "a page view writes nothing, so starts no session"
    );

    submit(client, "visit-button", NOT_LOGGED_IN).await;
    let cookie = session_cookie(client).await.expect("a session cookie");
    assert!(
        cookie.secure().unwrap_or(false),
        "Chromium keeps a Secure cookie on http://127.0.0.1: {cookie}"
    );
    let shown = text_of(client, "cookie-value").await;
    assert_eq!(
        shown,
        format!("{COOKIE}={}", cookie.value()),
        "the sealed cookie as sent"
    );
    assert_eq!(cookie.value().len(), 131);
    let flags = text_of(client, "cookie-flags").await;
    assert!(flags.starts_with("HttpOnly; Secure;"), "{flags}");
    let note = text_of(client, "secure-note").await;
    assert!(
        note.contains("http://localhost") && note.contains("TLS"),
        "{note}"
    );
    let key = text_of(client, "store-key").await;
    assert!(
        key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
        "the store key: {key}"
    );
    let data = text_of(client, "handler-data").await;
    assert!(data.contains("\"visits\": 1"), "{data}");
    client.refresh().await.expect("reload");
    let data = text_of(client, "handler-data").await;
    assert!(
        data.contains("\"visits\": 1"),
        "a reload only reads: {data}"
    );
    assert_eq!(text_of(client, "store-key").await, key, "the same session");

    log_in(client, "ada", false).await;
    // The record as the store had it when the reloaded page's request came in.
    let sealed = sealed_bytes(&text_of(client, "store-bytes").await);
    for plain in [&b"ada"[..], b"visits", b"\"n\""] {
        assert!(
            !sealed.windows(plain.len()).any(|w| w == plain),
            "the store holds {:?} in plaintext",
            String::from_utf8_lossy(plain)
        );
    }
    assert_ne!(
        text_of(client, "store-key").await,
        key,
        "login moves the session to a new key"
    );
    let data = text_of(client, "handler-data").await;
    assert!(data.contains("\"user_id\": \"ada\""), "{data}");
    // A day's lifespan: no prompt.
    assert!(!displayed(client, "extend-prompt").await);
    let lifespan = text_of(client, "lifespan-left").await;
    assert!(
        lifespan.starts_with("in 23h") || lifespan.starts_with("in 24h"),
        "{lifespan}"
    );
    screenshot(client, "quickstart").await;
}

/// A second device of the same user, listed and ended from the page.
async fn demo_devices(client: &Client, base: &str) {
    let other = common::jar_client();
    let res = other
        .post(format!("{base}/api/login"))
        .json(&json!({ "username": "ada" }))
        .send()
        .await
        .expect("log in elsewhere");
    assert_eq!(res.status(), 200);
    client.refresh().await.expect("reload");
    let devices = wait_for_devices(client, 2).await;
    let current: Vec<_> = devices
        .iter()
        .filter(|d| d.contains("(this device)"))
        .collect();
    assert_eq!(current.len(), 1, "{devices:?}");
    screenshot(client, "quickstart-devices").await;

    // "Log out" on the other one.
    let buttons = client
        .find_all(Locator::Css("li.device button.revoke"))
        .await
        .expect("the devices' buttons");
    let mut clicked = false;
    for button in buttons {
        if button.text().await.expect("a button's text") == "Log out" {
            button.click().await.expect("log the other device out");
            clicked = true;
            break;
        }
    }
    assert!(clicked, "no Log out button for the other device");
    wait_for_devices(client, 1).await;
    let me: Option<String> = other
        .get(format!("{base}/api/me"))
        .send()
        .await
        .expect("the other device's next request")
        .json()
        .await
        .expect("JSON");
    assert_eq!(me, None, "the other device is logged out");
    assert_eq!(who(client).await, "Logged in as ada.", "this device is not");
}

/// A 12-second lifespan: the prompt shows in its last 6 seconds, and extending
/// starts a new lifespan.
async fn demo_extend(client: &Client, base: &str) {
    client
        .goto(&format!("{base}/"))
        .await
        .expect("open the page");
    log_in(client, "grace", false).await;
    let start = Instant::now();
    while !displayed(client, "extend-prompt").await {
        assert!(start.elapsed() < WAIT, "no extend prompt within {WAIT:?}");
        tokio::time::sleep(POLL).await;
    }
    let left = text_of(client, "prompt-left").await;
    screenshot(client, "quickstart-extend").await;
    let seconds: u64 = left.trim_end_matches('s').parse().expect("seconds left");
    assert!(seconds <= 6, "the prompt came with {left} left");
    click(client, "extend-button").await;
    let start = Instant::now();
    while displayed(client, "extend-prompt").await {
        assert!(start.elapsed() < WAIT, "the prompt stayed after extending");
        tokio::time::sleep(POLL).await;
    }
    let lifespan = text_of(client, "lifespan-left").await;
    let seconds: u64 = lifespan
        .trim_start_matches("in ")
        .trim_end_matches('s')
        .parse()
        .expect("seconds left");
    assert!(seconds > 6, "extended: {lifespan}");
    client.refresh().await.expect("reload");
    assert_eq!(
        who(client).await,
        "Logged in as grace.",
        "the extended session lives"
    );
}

/// The bytes of the page's "sealed bytes" (base64, then its length).
fn sealed_bytes(shown: &str) -> Vec<u8> {
    use base64::Engine;
    let encoded = shown.split_whitespace().next().expect("base64");
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_else(|e| panic!("the sealed bytes {shown:?}: {e}"))
}

async fn displayed(client: &Client, id: &str) -> bool {
    client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("find #{id}: {e}"))
        .is_displayed()
        .await
        .unwrap_or_else(|e| panic!("is #{id} displayed: {e}"))
}

/// The page's device entries, once there are `count` of them.
async fn wait_for_devices(client: &Client, count: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let mut texts = Vec::new();
        if let Ok(found) = client.find_all(Locator::Css("li.device")).await {
            for device in found {
                if let Ok(text) = device.text().await {
                    texts.push(text);
                }
            }
        }
        if texts.len() == count {
            return texts;
        }
        assert!(
            start.elapsed() < WAIT,
            "expected {count} devices within {WAIT:?}, saw {texts:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Saves a screenshot of the window as `target/tmp/screenshots/{name}.png`,
/// after checking that it is a PNG of the window's size.
async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.expect("take a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(width >= 800 && height >= 600, "{width}x{height}");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).expect("a screenshots directory");
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, &png).expect("write the screenshot");
    println!("screenshot: {} ({width}x{height})", path.display());
}

/// Log in without remember-me, reload, log out, reload.
async fn login_logout(client: &Client, base: &str) {
    client
        .goto(&format!("{base}/"))
        .await
        .expect("open the page");
    assert_eq!(who(client).await, NOT_LOGGED_IN);
    assert_eq!(visits(client).await, "0", "a page view counts nothing");
    assert!(
        session_cookie(client).await.is_none(),
        "nor starts a session"
    );
    submit(client, "visit-button", NOT_LOGGED_IN).await;
    assert_eq!(visits(client).await, "1", "a first visit");
    let anonymous = session_cookie(client)
        .await
        .expect("counting a visit starts a session");
    assert_cookie_flags(&anonymous);
    assert_eq!(anonymous.expires(), None, "an anonymous session cookie");

    assert!(!remember_box(client).await, "remember-me starts unticked");
    log_in(client, "ada", false).await;
    assert_eq!(visits(client).await, "1", "login keeps the session's data");

    let cookie = session_cookie(client).await.expect("a session cookie");
    assert_ne!(
        cookie.value(),
        anonymous.value(),
        "login gives the session a new cookie"
    );
    assert_cookie_flags(&cookie);
    assert_eq!(
        cookie.expires(),
        None,
        "without remember-me the cookie ends with the browser session"
    );
    let script_sees: String = script(client, "return document.cookie;").await;
    assert!(
        !script_sees.contains(cookie.value())
            && !script_sees
                .split(';')
                .any(|pair| pair.trim_start().starts_with(&format!("{COOKIE}="))),
        "document.cookie exposes the HttpOnly session cookie: {script_sees:?}"
    );

    client.refresh().await.expect("reload");
    assert_eq!(who(client).await, "Logged in as ada.", "after a reload");
    assert_eq!(visits(client).await, "1", "a reload only reads");
    let reloaded = session_cookie(client).await.expect("a session cookie");
    assert_eq!(
        reloaded.value(),
        cookie.value(),
        "a reload keeps the cookie"
    );

    // A cookie put back in the jar (as below after logout) does open a live session.
    replay_cookie(client, base, cookie.value()).await;
    assert_eq!(
        who(client).await,
        "Logged in as ada.",
        "a replayed live cookie"
    );

    submit(client, "logout-button", NOT_LOGGED_IN).await;
    client.refresh().await.expect("reload");
    assert_eq!(who(client).await, NOT_LOGGED_IN, "after a reload");
    // A page view writes nothing, so after logout no session stands in the
    // logged-out one's place.
    assert_eq!(visits(client).await, "0", "no session after logout");
    let after = session_cookie(client).await;
    assert!(
        after.is_none(),
        "the logged-in cookie outlived logout: {after:?}"
    );

    // The old cookie, put back in the jar, no longer opens the session.
    replay_cookie(client, base, cookie.value()).await;
    assert_eq!(
        who(client).await,
        NOT_LOGGED_IN,
        "a logged-out cookie is dead on the server"
    );
    client.delete_all_cookies().await.expect("clear cookies");
}

/// Log in with remember-me: the cookie outlives the browser session, a login
/// without it makes it a session cookie again, and logging out removes it.
async fn remember_me(client: &Client, base: &str) {
    client
        .goto(&format!("{base}/"))
        .await
        .expect("open the page");
    assert_eq!(who(client).await, NOT_LOGGED_IN);
    let logged_in_at = log_in(client, "grace", true).await;
    let cookie = session_cookie(client).await.expect("a session cookie");
    assert_cookie_flags(&cookie);
    assert_remembered(&cookie, logged_in_at);

    client.refresh().await.expect("reload");
    assert_eq!(who(client).await, "Logged in as grace.", "after a reload");
    let reloaded = session_cookie(client).await.expect("a session cookie");
    assert_eq!(
        reloaded.value(),
        cookie.value(),
        "a reload keeps the cookie"
    );
    assert_remembered(&reloaded, logged_in_at);

    log_in(client, "grace", false).await;
    let cookie = session_cookie(client).await.expect("a session cookie");
    assert_cookie_flags(&cookie);
    assert_eq!(
        cookie.expires(),
        None,
        "a login without remember-me makes it a session cookie again"
    );
    let logged_in_at = log_in(client, "grace", true).await;
    let cookie = session_cookie(client).await.expect("a session cookie");
    assert_remembered(&cookie, logged_in_at);

    // The page's own logout reloads at once; this is the same request without
    // the reload, to see the removal cookie work on a persistent cookie.
    let status: Value = async_script(
        client,
        "const done = arguments[arguments.length - 1];
         fetch('/api/logout', {method: 'POST'})
           .then((res) => done(res.status), (err) => done(String(err)));",
    )
    .await;
    assert_eq!(status, json!(204), "POST /api/logout");
    let left = session_cookie(client).await;
    assert!(
        left.is_none(),
        "logout leaves the remember-me cookie in the browser: {left:?}"
    );
    client.refresh().await.expect("reload");
    assert_eq!(
        who(client).await,
        NOT_LOGGED_IN,
        "after logout and a reload"
    );
    client.delete_all_cookies().await.expect("clear cookies");
}

/// Empties the cookie jar, puts in a session cookie of `value` and reloads.
async fn replay_cookie(client: &Client, base: &str, value: &str) {
    client.delete_all_cookies().await.expect("clear cookies");
    let mut replayed = Cookie::new(COOKIE, value.to_owned());
    replayed.set_path("/");
    // chromedriver refuses the client's `"domain": null`.
    replayed.set_domain(host(base));
    replayed.set_http_only(true);
    // Without it the client sends `SameSite=None`, which Chromium refuses on a
    // cookie that is not `Secure`.
    replayed.set_same_site(SameSite::Lax);
    client
        .add_cookie(replayed)
        .await
        .expect("replay the cookie");
    client.refresh().await.expect("reload");
}

/// The host of a base URL like `http://127.0.0.1:1234`.
fn host(base: &str) -> String {
    let authority = base.split_once("://").map_or(base, |(_, rest)| rest);
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .to_owned()
}

/// `HttpOnly; SameSite=Lax; Path=/`, for this host (WebDriver names the host as
/// the domain of a host-only cookie), and not `Secure` (the test serves plain HTTP
/// with `with_secure(false)`).
fn assert_cookie_flags(cookie: &Cookie<'_>) {
    assert_eq!(cookie.http_only(), Some(true), "HttpOnly: {cookie}");
    assert_eq!(
        cookie.same_site(),
        Some(SameSite::Lax),
        "SameSite: {cookie}"
    );
    assert_eq!(cookie.path(), Some("/"), "Path: {cookie}");
    assert_ne!(
        cookie.secure(),
        Some(true),
        "Secure over plain HTTP: {cookie}"
    );
    assert!(
        cookie
            .domain()
            .is_none_or(|d| d == "127.0.0.1" || d == "localhost"),
        "host-only: {cookie}"
    );
}

/// The cookie is persistent and expires about the remember-me lifetime after login.
fn assert_remembered(cookie: &Cookie<'_>, logged_in_at: SystemTime) {
    let expires = cookie
        .expires_datetime()
        .unwrap_or_else(|| panic!("remember-me makes the cookie persistent: {cookie}"));
    let expires = UNIX_EPOCH + Duration::from_secs(expires.unix_timestamp().try_into().unwrap());
    let expected = logged_in_at + REMEMBER_ME;
    let slack = Duration::from_secs(120);
    assert!(
        expires > expected - slack && expires < expected + slack,
        "the cookie expires {expires:?}, expected about {expected:?}: {cookie}"
    );
}

async fn session_cookie(client: &Client) -> Option<Cookie<'static>> {
    let all = client.get_all_cookies().await.expect("read cookies");
    let mut ours = all.into_iter().filter(|c| c.name() == COOKIE);
    let first = ours.next();
    assert!(ours.next().is_none(), "more than one {COOKIE} cookie");
    first
}

async fn text_of(client: &Client, id: &str) -> String {
    client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("find #{id}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("read #{id}: {e}"))
}

async fn who(client: &Client) -> String {
    text_of(client, "who").await
}

async fn visits(client: &Client) -> String {
    text_of(client, "visits").await
}

/// Clicks `button`, whose form's script calls the API and then reloads the page,
/// and waits until the reloaded page says `expected`. The old page is marked
/// first, so that it cannot pass for the new one (a second login as the same user
/// shows the same text); while the page reloads, errors mean "not yet".
async fn submit(client: &Client, button: &str, expected: &str) {
    let _: Value = script(client, "window.beforeSubmit = true; return null;").await;
    click(client, button).await;
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < WAIT {
        let reloaded = client
            .execute("return window.beforeSubmit === undefined;", vec![])
            .await;
        if matches!(reloaded, Ok(Value::Bool(true))) {
            let text = async { client.find(Locator::Id("who")).await?.text().await }.await;
            match text {
                Ok(text) if text == expected => return,
                Ok(text) => last = text,
                Err(err) => last = format!("({err})"),
            }
        } else {
            last = "(the page has not reloaded)".to_owned();
        }
        tokio::time::sleep(POLL).await;
    }
    panic!(
        "after clicking #{button} the page did not show {expected:?} within {WAIT:?}; \
         last seen {last:?}"
    );
}

/// Logs in through the form, ticking or unticking remember-me, and waits for the
/// page to say so; returns the time just before the submit.
async fn log_in(client: &Client, name: &str, remember: bool) -> SystemTime {
    type_username(client, name).await;
    if remember_box(client).await != remember {
        click(client, "remember").await;
    }
    assert_eq!(remember_box(client).await, remember, "the remember-me box");
    let at = SystemTime::now();
    submit(client, "login-button", &format!("Logged in as {name}.")).await;
    at
}

async fn type_username(client: &Client, name: &str) {
    let input = client
        .find(Locator::Id("username"))
        .await
        .expect("the username field");
    input.clear().await.expect("clear the username field");
    input.send_keys(name).await.expect("type a username");
}

async fn remember_box(client: &Client) -> bool {
    client
        .find(Locator::Id("remember"))
        .await
        .expect("the remember-me box")
        .is_selected()
        .await
        .expect("read the remember-me box")
}

async fn click(client: &Client, id: &str) {
    client
        .find(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("find #{id}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click #{id}: {e}"));
}

async fn script<T: serde::de::DeserializeOwned>(client: &Client, code: &str) -> T {
    let value = client
        .execute(code, vec![])
        .await
        .unwrap_or_else(|e| panic!("run {code:?}: {e}"));
    serde_json::from_value(value).expect("the script's answer")
}

async fn async_script(client: &Client, code: &str) -> Value {
    client
        .execute_async(code, vec![])
        .await
        .unwrap_or_else(|e| panic!("run {code:?}: {e}"))
}

/// Opens a WebDriver session on a headless Chromium with a fresh profile.
async fn connect(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|s| s.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut caps = Capabilities::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": chromium, "args": args }),
    );
    let mut builder = ClientBuilder::new(HttpConnector::new());
    builder.capabilities(caps);
    let connecting = tokio::time::timeout(BROWSER_START, builder.connect(&driver.url)).await;
    let client = match connecting {
        Ok(Ok(client)) => client,
        Ok(Err(err)) => panic!(
            "start Chromium through chromedriver: {err}; chromedriver's log:\n{}",
            driver.log()
        ),
        Err(_) => panic!(
            "Chromium did not start within {BROWSER_START:?}; chromedriver's log:\n{}",
            driver.log()
        ),
    };
    client
        .update_timeouts(TimeoutConfiguration::new(
            Some(WAIT),
            Some(WAIT),
            Some(Duration::ZERO),
        ))
        .await
        .expect("set the WebDriver timeouts");
    client
}

/// Where the browser and its driver are.
struct Programs {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

impl Programs {
    /// Both programs, or `None` after saying why not; under CI a missing program
    /// fails the test instead.
    fn find() -> Option<Self> {
        let missing = match (which("chromium"), which("chromedriver")) {
            (Some(chromium), Some(chromedriver)) => {
                return Some(Programs {
                    chromium,
                    chromedriver,
                });
            }
            (None, None) => "chromium and chromedriver are",
            (None, Some(_)) => "chromium is",
            (Some(_), None) => "chromedriver is",
        };
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but {missing} not installed: .ci/run must install Debian's \
             chromium and chromium-driver"
        );
        eprintln!(
            "skipped: {missing} not installed on PATH \
             (apt-get install chromium chromium-driver)"
        );
        None
    }
}

/// The first executable file called `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|file| {
            std::fs::metadata(file)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A `chromedriver` process on a loopback port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Driver {
    /// Starts chromedriver and waits until it answers that it is ready. A port taken
    /// between choosing and binding it makes chromedriver exit: then another port.
    async fn start(program: &Path, scratch: &Path) -> Self {
        let log = scratch.join("chromedriver.log");
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
                .port();
            let child = Command::new(program)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
            let mut driver = Driver {
                child,
                url: format!("http://127.0.0.1:{port}"),
                log: log.clone(),
            };
            if driver.wait_ready().await {
                return driver;
            }
        }
        panic!("chromedriver did not start; its log:\n{}", read_log(&log));
    }

    /// Polls `/status` until chromedriver is ready (true), or exits or runs out of
    /// time (false).
    async fn wait_ready(&mut self) -> bool {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .expect("an HTTP client");
        let status = format!("{}/status", self.url);
        let start = Instant::now();
        while start.elapsed() < WAIT {
            if self.child.try_wait().expect("poll chromedriver").is_some() {
                return false;
            }
            if let Ok(res) = http.get(&status).send().await {
                if let Ok(body) = res.json::<Value>().await {
                    if body["value"]["ready"] == json!(true) {
                        return true;
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    fn log(&self) -> String {
        read_log(&self.log)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The end of a log file, for a failure message.
fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(unreadable: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A fresh temporary directory: the browser profile and chromedriver's log. Removed
/// when dropped; declared before the driver, so dropped after it.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "tss-browser-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        Scratch { path }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
