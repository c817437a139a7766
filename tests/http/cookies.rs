//! The cookie on the wire: refused when forged, read from split headers, set with safe attributes, never cached, never ambiguous.

use super::*;

#[tokio::test]
async fn tampered_truncated_oversized_and_foreign_cookies_mean_no_session_and_no_io() {
    let h = Harness::new().await;
    let good = cookie_pair(&h.post("/set/a/1").await);
    let value = good.strip_prefix("id=").unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(value).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tampered = URL_SAFE_NO_PAD.encode(&bytes);
    let foreign = {
        let layer = SessionLayer::new(MemoryStore::default(), Keys::generate());
        let other = serve(app(layer, Gate::default())).await;
        let res = reqwest::Client::new()
            .post(format!("{other}/set/a/1"))
            .send()
            .await
            .unwrap();
        cookie_pair(&res)
    };
    let cases = [
        format!("id={tampered}"),
        format!("id={}", &value[..value.len() / 2]),
        format!("id={}", "A".repeat(5000)),
        format!("id={value}!"),
        foreign,
        "id=".to_owned(),
    ];
    h.store.take_ops();
    for cookie in &cases {
        let res = h.get_with_cookie("/get/a", cookie).await;
        assert_eq!(res.status(), 200, "{cookie}");
        let cleared = set_cookies(&res);
        assert_eq!(cleared.len(), 1, "{cookie}: the bad cookie is cleared");
        assert!(cleared[0].contains("Max-Age=0"));
        assert_eq!(res.json::<Value>().await.unwrap(), Value::Null);
        assert!(
            h.store.take_ops().is_empty(),
            "{cookie}: refused before any store I/O"
        );
    }
    let res = h.get_with_cookie("/get/a", &good).await;
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!("1"),
        "the real session is intact"
    );
}

#[tokio::test]
async fn split_cookie_headers_over_http2_are_all_read() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/a/1").await);
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let res = h2
        .get(h.url("/get/a"))
        .header(COOKIE, "theme=dark")
        .header(COOKIE, &cookie)
        .header(COOKIE, "lang=en")
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.json::<Value>().await.unwrap(), json!("1"));
}

#[tokio::test]
async fn default_cookie_is_secure_http_only_lax_at_root() {
    let store = MemoryStore::default();
    let layer = SessionLayer::new(store, Keys::generate());
    let base = serve(app(layer, Gate::default())).await;
    let res = reqwest::Client::new()
        .post(format!("{base}/set/a/1"))
        .send()
        .await
        .unwrap();
    let set = set_cookies(&res);
    assert!(set[0].starts_with("id="));
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(set[0].contains(attr), "{set:?} lacks {attr}");
    }
    assert!(!set[0].contains("Domain"));
    assert_eq!(res.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn store_dump_holds_neither_plaintext_nor_the_session_id() {
    let h = Harness::new().await;
    let cookie = cookie_pair(&h.post("/set/secret/hunter2-plaintext").await);
    h.post("/set/user/ada-lovelace").await;
    let sid_before = decode_sid(SECRET, cookie.strip_prefix("id=").unwrap());
    let dump = h.store.inner.dump();
    assert_eq!(dump.len(), 1);
    for (key, record) in &dump {
        let mut bytes = key.as_bytes().to_vec();
        bytes.extend_from_slice(&record.data);
        for needle in [&b"hunter2"[..], b"ada-lovelace", b"secret", &sid_before] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "found {needle:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_response_setting_the_cookie_is_never_cacheable() {
    let h = Harness::new().await;
    let res = h.post("/public/a/1").await;
    assert_eq!(set_cookies(&res).len(), 1);
    assert_eq!(
        res.headers()["cache-control"],
        "no-store",
        "public was overridden"
    );
    let res = h.post("/public/a/2").await;
    assert!(set_cookies(&res).is_empty());
    assert_eq!(
        res.headers()["cache-control"],
        "public, max-age=3600",
        "untouched without a cookie"
    );
}

#[tokio::test]
async fn a_tossed_cookie_never_wins_over_nor_replaces_the_real_session() {
    let h = Harness::new().await;
    let victim = cookie_pair(&h.post("/set/who/victim").await);
    // The attacker's own, authentic session, planted in the victim's browser from a
    // sibling subdomain or a longer path: the browser sends both cookies.
    let attacker = cookie_pair(&h.post_with_cookie("/set/who/attacker", "").await);
    assert_ne!(victim, attacker);
    h.store.take_ops();

    for both in [
        format!("{attacker}; {victim}"),
        format!("{victim}; {attacker}"),
    ] {
        let res = h.get_with_cookie("/get/who", &both).await;
        assert_eq!(res.status(), 200);
        assert!(
            set_cookies(&res).is_empty(),
            "ours is not cleared: the planted one would be left alone"
        );
        assert_eq!(res.json::<Value>().await.unwrap(), Value::Null, "{both}");
        assert!(h.store.take_ops().is_empty(), "neither session is loaded");
        let res = h.get_with_cookie("/ambiguous", &both).await;
        assert_eq!(res.text().await.unwrap(), "true", "the handler can tell");

        // A write under two cookies lands in no session, and no new cookie
        // replaces the real one.
        let res = h.post_with_cookie("/set/who/mallory", &both).await;
        assert_eq!(res.status(), 204);
        assert!(set_cookies(&res).is_empty(), "{:?}", set_cookies(&res));
        assert!(h.store.take_ops().is_empty(), "nothing written");
    }
    let h = &h;
    let read = |cookie: String| async move {
        let res = h.get_with_cookie("/get/who", &cookie).await;
        res.json::<Value>().await.unwrap()
    };
    assert_eq!(read(victim.clone()).await, json!("victim"));
    assert_eq!(read(attacker.clone()).await, json!("attacker"));
    let res = h.get_with_cookie("/ambiguous", &victim).await;
    assert_eq!(res.text().await.unwrap(), "false");

    // A planted cookie past its own lifespan still makes two sessions: its record
    // is not even loaded.
    let late = cookie_pair(&h.post_with_cookie("/set/who/late", "").await);
    h.clock.advance(Duration::from_secs(24 * 3600 + 1));
    let fresh = cookie_pair(&h.post_with_cookie("/set/who/fresh", "").await);
    h.store.take_ops();
    assert_eq!(read(format!("{late}; {fresh}")).await, Value::Null);
    assert!(h.store.take_ops().is_empty(), "neither record loaded");
    assert_eq!(read(fresh.clone()).await, json!("fresh"), "alone, it opens");
    let h2 = Harness::new().await;
    let (victim, attacker) = (
        cookie_pair(&h2.post_with_cookie("/set/who/victim", "").await),
        cookie_pair(&h2.post_with_cookie("/set/who/attacker", "").await),
    );
    // Logging out under two cookies ends both sessions and clears ours.
    let res = h2
        .post_with_cookie("/logout", &format!("{attacker}; {victim}"))
        .await;
    assert_eq!(res.status(), 204);
    assert!(set_cookies(&res)[0].contains("Max-Age=0"));
    for cookie in [&victim, &attacker] {
        let res = h2.get_with_cookie("/get/who", cookie).await;
        assert_eq!(res.json::<Value>().await.unwrap(), Value::Null);
    }
    assert!(h2.store.inner.is_empty());

    // The same cookie twice, or a garbage one beside it, is no ambiguity.
    let victim = cookie_pair(&h2.post_with_cookie("/set/who/victim", "").await);
    let res = h2
        .get_with_cookie("/get/who", &format!("{victim}; {victim}"))
        .await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!("victim"));
    let res = h2
        .get_with_cookie("/get/who", &format!("id=garbage; {victim}"))
        .await;
    assert!(set_cookies(&res).is_empty(), "the real cookie is kept");
    assert_eq!(res.json::<Value>().await.unwrap(), json!("victim"));
}

#[tokio::test]
async fn a_cookie_bomb_is_ambiguous_saves_nothing_and_clears_nothing() {
    let h = Harness::new().await;
    let victim = cookie_pair(&h.post_with_cookie("/set/who/victim", "").await);
    // Nine copies of a valid cookie: one more than the layer opens.
    let bomb = [victim.as_str(); 9].join("; ");
    let eight = [victim.as_str(); 8].join("; ");
    h.store.take_ops();
    for (path, post) in [
        ("/get/who", false),
        ("/set/who/mallory", true),
        ("/logout", true),
    ] {
        let res = if post {
            h.post_with_cookie(path, &bomb).await
        } else {
            h.get_with_cookie(path, &bomb).await
        };
        assert!(res.status().is_success(), "{path}: {}", res.status());
        assert!(
            set_cookies(&res).is_empty(),
            "{path}: {:?}",
            set_cookies(&res)
        );
        if path == "/get/who" {
            assert_eq!(res.json::<Value>().await.unwrap(), Value::Null);
        }
        assert!(h.store.take_ops().is_empty(), "{path}: no store I/O");
    }
    let res = h.get_with_cookie("/ambiguous", &bomb).await;
    assert_eq!(res.text().await.unwrap(), "true");
    // Eight copies of the same cookie are one session, and it is intact.
    let res = h.get_with_cookie("/get/who", &eight).await;
    assert_eq!(res.json::<Value>().await.unwrap(), json!("victim"));
    // Three thousand forged tokens cost no more than nine.
    let forged = format!("id={}", "A".repeat(60));
    let huge = vec![forged.as_str(); 3_000].join("; ");
    let res = h.get_with_cookie("/ambiguous", &huge).await;
    assert!(set_cookies(&res).is_empty(), "nothing cleared");
    assert_eq!(res.text().await.unwrap(), "true");
}
