//! Issues the fixture sessions (under the fixed keys, at the fixed instant) and
//! writes `src/fixtures.rs` and the token-based seed corpora.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example make_fixtures`
//!
//! Sealing draws random nonces and ids, so each run gives new (equally valid)
//! fixtures: commit the output together with the seeds it wrote.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use http::HeaderMap;
use tower_sealed_sessions::Keys;
use tss_fuzz::{Action, Mode, hex, layer_with, previous_secret, primary_secret};

struct Spec {
    mode: Mode,
    previous_key: bool,
    tag: i64,
    remember_me: bool,
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let specs = [
        (Mode::Cookie, false, 0, false),
        (Mode::Cookie, false, 1, true),
        (Mode::Cookie, true, 2, false),
        (Mode::Header, false, 3, false),
        (Mode::Header, true, 4, true),
    ]
    .map(|(mode, previous_key, tag, remember_me)| Spec {
        mode,
        previous_key,
        tag,
        remember_me,
    });

    let mut out = String::from(
        "//! Tokens and records issued once by `examples/make_fixtures.rs` under the fixed\n\
         //! keys at the fixed instant. Regenerate with\n\
         //! `cargo run --manifest-path fuzz/Cargo.toml --example make_fixtures`.\n\n\
         /// A session issued for the fuzz targets.\n\
         pub struct Issued {\n    pub token: &'static str,\n    pub header_mode: bool,\n    \
         /// Sealed under the previous key of the ring (index 1), so it gets re-sealed.\n    \
         pub previous_key: bool,\n    pub tag: i64,\n    pub store_key_hex: &'static str,\n    \
         pub version: u64,\n    pub idle_ms: u64,\n    pub lifespan_ms: u64,\n    \
         pub data_hex: &'static str,\n}\n\npub const ISSUED: &[Issued] = &[\n",
    );
    let mut issued = Vec::new();
    for spec in &specs {
        let secret = if spec.previous_key {
            previous_secret()
        } else {
            primary_secret()
        };
        let keys = Keys::from_secret(&secret).expect("fixed secret");
        let store = tss_fuzz::store();
        let layer = layer_with(store.clone(), keys, spec.mode);
        let outcome = tss_fuzz::run(
            &layer,
            HeaderMap::new(),
            Action::Seed {
                tag: spec.tag,
                remember_me: spec.remember_me,
            },
        );
        let token = outcome.token(spec.mode).expect("a new session hands out a token");
        let records = store.dump();
        assert_eq!(records.len(), 1, "one record per new session");
        let (key, record) = &records[0];
        writeln!(
            out,
            "    Issued {{\n        token: {token:?},\n        header_mode: {},\n        \
             previous_key: {},\n        tag: {},\n        store_key_hex: {:?},\n        \
             version: {},\n        idle_ms: {},\n        lifespan_ms: {},\n        \
             data_hex: {:?},\n    }},",
            spec.mode == Mode::Header,
            spec.previous_key,
            spec.tag,
            hex(key.as_bytes()),
            record.version,
            record.deadlines.idle.unix_millis(),
            record.deadlines.lifespan.unix_millis(),
            hex(&record.data),
        )
        .unwrap();
        issued.push((token, record.clone(), spec.mode));
    }
    out.push_str("];\n");
    fs::write(root.join("src/fixtures.rs"), out).unwrap();

    let seed = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join("corpus").join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), bytes).unwrap();
    };
    // cookie_open: the value of the `id` cookie (and of the x-session header).
    for (i, (token, _, _)) in issued.iter().enumerate() {
        seed("cookie_open", &format!("token{i}"), token.as_bytes());
    }
    seed(
        "cookie_open",
        "quoted",
        format!("\"{}\"", issued[0].0).as_bytes(),
    );
    // cookie_header: Cookie header lines, one per input line.
    let (t0, t1, t2) = (&issued[0].0, &issued[1].0, &issued[2].0);
    seed("cookie_header", "one", format!("id={t0}").as_bytes());
    seed(
        "cookie_header",
        "among_others",
        format!("theme=dark; id=\"{t1}\" ; lang=en").as_bytes(),
    );
    seed(
        "cookie_header",
        "split_lines",
        format!("id=bogus; a=b\nid={t2}").as_bytes(),
    );
    seed("cookie_header", "no_session", b"a=1; b=2;c\n=x");
    seed(
        "cookie_header",
        "two_sessions",
        format!("id={t0}\nid={t1}; id=x").as_bytes(),
    );
    // record_open: [action, fixture, version LE, idle LE, lifespan LE, data...].
    for (i, (_, record, _)) in issued.iter().enumerate() {
        for action in [0u8, 1, 4] {
            let mut input = vec![action, i as u8];
            input.extend_from_slice(&record.version.to_le_bytes());
            input.extend_from_slice(&record.deadlines.idle.unix_millis().to_le_bytes());
            input.extend_from_slice(&record.deadlines.lifespan.unix_millis().to_le_bytes());
            input.extend_from_slice(&record.data);
            if i == 0 || action == 0 {
                seed("record_open", &format!("fixture{i}_action{action}"), &input);
            }
        }
    }
    println!("wrote src/fixtures.rs and seeds for {} sessions", issued.len());
}
