//! Unit tests of record sealing: the format vectors, round trips, refusals, and what a store writer cannot change.

use super::*;
use crate::keys::Keys;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

fn keys() -> Keys {
    Keys::unchecked(&[0x42; 32])
}

fn sample() -> Data {
    Data::from([
        ("user".to_owned(), Value::from("ada")),
        ("n".to_owned(), Value::from(3)),
    ])
}

const BINDING: Binding = Binding {
    version: 7,
    lifespan: Timestamp::from_unix_millis(1_700_000_000_000),
    remember_me: true,
};

/// The record `sealed` would be, stored with what `binding` says.
fn stored(binding: Binding, sealed: impl Into<Bytes>) -> Record {
    let deadlines = Deadlines {
        idle: binding.lifespan,
        lifespan: binding.lifespan,
        active: Timestamp::from_unix_millis(0),
    };
    Record::new(binding.version, deadlines, sealed.into())
}

/// Data `{"n":3}` sealed by format v1 for sid `[0x11; 16]` and record secret
/// `[0x22; 32]` with nonce `[9; 12]`. Never change it: later versions must open it.
const V1_VECTOR: &str = "AQkJCQkJCQkJCQkJCVV+YIttLyVTOHZixJ39yTQEZpTakEeH";
const V1_STORE_KEY: &str = "871924f325c338322aa5b94be82aadc5e710c9d1adae14bab19c525bcd554bfc";
/// The same data sealed by format v2, with nonce `[9; 12]` and [`BINDING`].
/// Never change it either.
const V2_VECTOR: &str = "AgEJCQkJCQkJCQkJCQlVfmCLbS8lEmetJZgjw6JD+hzNfjWzdA==";

#[test]
fn v1_test_vector_still_opens_whatever_the_record_says() {
    let keys = keys();
    let store_key = StoreKey::derive(keys.primary(), &[0x11; 16]);
    assert_eq!(store_key.to_string(), V1_STORE_KEY);
    let cipher = DataCipher::new(&[0x22; 32]);
    let sealed = STANDARD.decode(V1_VECTOR).unwrap();
    for binding in [
        BINDING,
        Binding {
            version: 1,
            remember_me: false,
            ..BINDING
        },
    ] {
        let opened = cipher
            .open(keys.primary(), &store_key, &stored(binding, sealed.clone()))
            .unwrap();
        assert_eq!(opened.data, Data::from([("n".to_owned(), Value::from(3))]));
        assert_eq!(opened.remember_me, None, "v1 did not keep the flag");
    }
}

/// `record_format: 2` (a rolling upgrade): writes seal v2 exactly as the release
/// before v3 did (the frozen vector), which that release opens.
#[test]
fn sealing_v2_reproduces_the_v2_vector() {
    let keys = keys();
    let store_key = StoreKey::derive(keys.primary(), &[0x11; 16]);
    let cipher = DataCipher::new(&[0x22; 32]).sealing_v2(keys.primary());
    let sealed = cipher.seal_with_nonce(&store_key, BINDING, br#"{"n":3}"#, [9; 12]);
    assert_eq!(STANDARD.encode(&sealed), V2_VECTOR);
    let sealed = cipher.seal(&store_key, BINDING, &sample());
    assert_eq!(sealed[0], 2);
    let opened = DataCipher::new(&[0x22; 32])
        .open(keys.primary(), &store_key, &stored(BINDING, sealed))
        .unwrap();
    assert_eq!(opened.data, sample());
}

#[test]
fn v2_test_vector_still_opens() {
    let keys = keys();
    let store_key = StoreKey::derive(keys.primary(), &[0x11; 16]);
    let cipher = DataCipher::new(&[0x22; 32]);
    let opened = cipher
        .open(
            keys.primary(),
            &store_key,
            &stored(BINDING, STANDARD.decode(V2_VECTOR).unwrap()),
        )
        .unwrap();
    assert_eq!(opened.data, Data::from([("n".to_owned(), Value::from(3))]));
    assert_eq!(opened.remember_me, Some(true));
}

/// The same data sealed by format v3 (the record secret as the data key), with
/// nonce `[9; 12]` and [`BINDING`]. Never change it. Reproduced outside this
/// crate, with Python's `cryptography` (HKDF-SHA256 for the store-id key, HMAC
/// for the store key, AES-GCM over the associated data the crate documents), as
/// were [`V1_STORE_KEY`] and [`V2_VECTOR`].
const V3_VECTOR: &str = "AwEJCQkJCQkJCQkJCQktWv/mfFfLEtpXTqHr/JbzWkGU2HoRfg==";

#[test]
fn v3_test_vector_is_stable_and_opens_without_the_record_key() {
    let keys = keys();
    let store_key = StoreKey::derive(keys.primary(), &[0x11; 16]);
    let cipher = DataCipher::new(&[0x22; 32]);
    let sealed = cipher.seal_with_nonce(&store_key, BINDING, br#"{"n":3}"#, [9; 12]);
    assert_eq!(STANDARD.encode(&sealed), V3_VECTOR);
    assert_eq!(sealed[0], 3, "the version byte");
    // The key schedule is the record secret's: any keyring opens it (the secret
    // is the credential, and only this server's cookies carry it).
    let any = Keys::unchecked(&[0x43; 32]);
    let opened = cipher
        .open(
            any.primary(),
            &store_key,
            &stored(BINDING, STANDARD.decode(V3_VECTOR).unwrap()),
        )
        .unwrap();
    assert_eq!(opened.data, Data::from([("n".to_owned(), Value::from(3))]));
    assert_eq!(opened.remember_me, Some(true));
    // A v3 record relabelled v2 (or the reverse) does not open.
    let mut relabelled = sealed.to_vec();
    relabelled[0] = 2;
    assert_eq!(
        cipher.open(keys.primary(), &store_key, &stored(BINDING, relabelled)),
        Err(RecordError::Tampered)
    );
    let mut relabelled = STANDARD.decode(V2_VECTOR).unwrap();
    relabelled[0] = 3;
    assert_eq!(
        cipher.open(keys.primary(), &store_key, &stored(BINDING, relabelled)),
        Err(RecordError::Tampered)
    );
}

#[test]
fn a_v1_record_keeps_the_cookies_remember_me_only_without_an_earlier_idle_deadline() {
    let v1 = OpenedRecord {
        data: Data::new(),
        remember_me: None,
        user: None,
    };
    let lifespan = Timestamp::from_unix_millis(1_000_000);
    let deadlines = |idle| Deadlines {
        idle,
        lifespan,
        active: Timestamp::from_unix_millis(0),
    };
    assert!(v1.remember_me(true, &deadlines(lifespan)));
    assert!(!v1.remember_me(true, &deadlines(Timestamp::from_unix_millis(999_999))));
    assert!(!v1.remember_me(false, &deadlines(lifespan)));
    let v2 = OpenedRecord {
        data: Data::new(),
        remember_me: Some(false),
        user: None,
    };
    assert!(
        !v2.remember_me(true, &deadlines(lifespan)),
        "v2: the record's flag"
    );
}

#[test]
fn round_trip_and_ciphertext_holds_no_plaintext() {
    let keys = keys();
    let store_key = StoreKey::derive(keys.primary(), &[1; 16]);
    let cipher = DataCipher::new(&[2; 32]);
    for binding in [
        BINDING,
        Binding {
            remember_me: false,
            ..BINDING
        },
    ] {
        let sealed = cipher.seal(&store_key, binding, &sample());
        assert!(!sealed.windows(3).any(|w| w == b"ada"));
        let opened = cipher
            .open(keys.primary(), &store_key, &stored(binding, sealed))
            .unwrap();
        assert_eq!(opened.data, sample());
        assert_eq!(opened.remember_me, Some(binding.remember_me));
    }
}

#[test]
fn record_moved_to_another_key_or_opened_with_another_secret_fails() {
    let keys = keys();
    let a = StoreKey::derive(keys.primary(), &[1; 16]);
    let b = StoreKey::derive(keys.primary(), &[2; 16]);
    let cipher = DataCipher::new(&[3; 32]);
    let sealed = stored(BINDING, cipher.seal(&a, BINDING, &sample()));
    assert_eq!(
        cipher.open(keys.primary(), &b, &sealed),
        Err(RecordError::Tampered)
    );
    let wrong_secret = DataCipher::new(&[4; 32]);
    assert_eq!(
        wrong_secret.open(keys.primary(), &a, &sealed),
        Err(RecordError::Tampered)
    );
    // A v2 record's data key was derived under the server's record key too; a v3
    // record's is the secret alone, which only this server's cookies carry.
    let other_server = Keys::unchecked(&[0x43; 32]);
    let store_key = StoreKey::derive(keys.primary(), &[0x11; 16]);
    let v2 = stored(BINDING, STANDARD.decode(V2_VECTOR).unwrap());
    let cipher = DataCipher::new(&[0x22; 32]);
    assert!(cipher.open(keys.primary(), &store_key, &v2).is_ok());
    assert_eq!(
        cipher.open(other_server.primary(), &store_key, &v2),
        Err(RecordError::Tampered)
    );
}

#[test]
fn a_record_whose_version_lifespan_or_flag_changed_in_the_store_fails() {
    let keys = keys();
    let key = StoreKey::derive(keys.primary(), &[1; 16]);
    let cipher = DataCipher::new(&[2; 32]);
    let sealed = cipher.seal(&key, BINDING, &sample());
    let later = BINDING
        .lifespan
        .saturating_add(std::time::Duration::from_millis(1));
    for changed in [
        Binding {
            version: 8,
            ..BINDING
        },
        Binding {
            version: 6,
            ..BINDING
        },
        Binding {
            lifespan: later,
            ..BINDING
        },
    ] {
        let record = stored(changed, sealed.clone());
        assert_eq!(
            cipher.open(keys.primary(), &key, &record),
            Err(RecordError::Tampered),
            "{changed:?}"
        );
    }
    // The flag is in the clear, and bound: cleared, or set to an unknown bit.
    for flags in [0, 3, 0x80] {
        let mut bytes = sealed.to_vec();
        bytes[1] = flags;
        let record = stored(BINDING, bytes);
        assert_eq!(
            cipher.open(keys.primary(), &key, &record),
            Err(RecordError::Tampered),
            "{flags}"
        );
    }
    // Only the idle deadline and the last activity may move without a new seal
    // (a touch writes them alone).
    let mut touched = stored(BINDING, sealed);
    touched.deadlines.idle = Timestamp::from_unix_millis(1);
    touched.deadlines.active = Timestamp::from_unix_millis(2);
    assert!(cipher.open(keys.primary(), &key, &touched).is_ok());
}

#[test]
fn garbage_never_panics_and_is_rejected() {
    let keys = keys();
    let key = StoreKey::derive(keys.primary(), &[1; 16]);
    let cipher = DataCipher::new(&[2; 32]);
    let open = |bytes: &[u8]| cipher.open(keys.primary(), &key, &stored(BINDING, bytes.to_vec()));
    assert_eq!(open(b""), Err(RecordError::Truncated));
    assert_eq!(open(&[2]), Err(RecordError::Truncated));
    assert_eq!(open(&[1; 28]), Err(RecordError::Truncated), "v1: one short");
    assert_eq!(
        open(&[2; 29]),
        Err(RecordError::Tampered),
        "v2: unknown flag"
    );
    assert_eq!(open(&[2, 1, 0, 0]), Err(RecordError::Truncated));
    assert_eq!(open(&[4; 64]), Err(RecordError::UnknownVersion(4)));
    assert_eq!(
        open(&[3; 29]),
        Err(RecordError::Tampered),
        "v3: unknown flag"
    );
    assert_eq!(open(&[0; 64]), Err(RecordError::UnknownVersion(0)));
    assert_eq!(open(&[1; 64]), Err(RecordError::Tampered));
    let mut shortest = vec![0u8; HEADER_LEN + NONCE_LEN + TAG_LEN];
    shortest[..2].copy_from_slice(&[2, 1]);
    assert_eq!(open(&shortest), Err(RecordError::Tampered));
    assert_eq!(
        open(&shortest[..29]),
        Err(RecordError::Truncated),
        "v2: one short"
    );
    // Authentic but not a JSON object.
    let sealed = cipher.seal_with_nonce(&key, BINDING, b"[1,2]", [0; 12]);
    assert_eq!(
        cipher.open(keys.primary(), &key, &stored(BINDING, sealed)),
        Err(RecordError::Malformed)
    );
}

#[test]
fn a_session_carries_its_data_key_not_its_key_schedule() {
    // The key schedule is set up where it is used, never carried: the record
    // secret is (and, while writes seal v2, its derived key).
    assert!(std::mem::size_of::<DataCipher>() <= 80);
    assert!(std::mem::size_of::<Aes256Gcm>() > 256);
}

/// Data read without building the map: one key straight from the text, the
/// last of a repeated key, a type mismatch as an error, and the map built (and
/// equal) only when asked for.
#[test]
fn a_read_of_one_key_builds_no_map() {
    let keys = keys();
    let key = StoreKey::derive(keys.primary(), &[1; 16]);
    let cipher = DataCipher::new(&[2; 32]);
    let data = Data::from([
        ("a".to_owned(), Value::from("x\"\u{e9}")),
        ("n".to_owned(), Value::from(3)),
        ("list".to_owned(), serde_json::json!([1, {"b": "c"}])),
    ]);
    let opened = cipher
        .open(
            keys.primary(),
            &key,
            &stored(BINDING, cipher.seal(&key, BINDING, &data)),
        )
        .unwrap()
        .data;
    assert!(!opened.is_parsed());
    assert_eq!(opened.lookup::<u64>("n").unwrap().unwrap(), 3);
    assert_eq!(opened.lookup::<String>("a").unwrap().unwrap(), "x\"\u{e9}");
    assert!(opened.lookup::<u64>("missing").is_none());
    assert!(opened.lookup::<u64>("a").unwrap().is_err(), "not a number");
    assert_eq!(
        opened.lookup::<Value>("list").unwrap().unwrap(),
        serde_json::json!([1, {"b": "c"}])
    );
    assert!(!opened.is_parsed(), "reads built nothing");

    let tied = Data::from([
        (USER_KEY.to_owned(), Value::from("ada")),
        ("n".to_owned(), Value::from(1)),
    ]);
    let inside = cipher
        .open(
            keys.primary(),
            &key,
            &stored(BINDING, cipher.seal(&key, BINDING, &tied)),
        )
        .unwrap();
    assert_eq!(
        inside.user.as_deref(),
        Some("ada"),
        "the user, found while checking"
    );
    assert!(!inside.data.is_parsed());
    assert_eq!(opened, data, "the map, built on demand, is the data");
    assert!(opened.is_parsed());

    let repeated = cipher.seal_with_nonce(&key, BINDING, br#"{"k":1,"k":2}"#, [0; NONCE_LEN]);
    let opened = cipher
        .open(keys.primary(), &key, &stored(BINDING, repeated))
        .unwrap()
        .data;
    assert_eq!(
        opened.lookup::<u64>("k").unwrap().unwrap(),
        2,
        "the last, as the map"
    );
    assert_eq!(opened.get("k"), Some(&Value::from(2)));

    let mut changed = cipher
        .open(
            keys.primary(),
            &key,
            &stored(BINDING, cipher.seal(&key, BINDING, &data)),
        )
        .unwrap()
        .data;
    changed.insert("n".to_owned(), Value::from(4));
    assert_eq!(
        changed.lookup::<u64>("n").unwrap().unwrap(),
        4,
        "a change is read back"
    );
}

#[test]
fn data_of_any_length_round_trips() {
    let keys = keys();
    let key = StoreKey::derive(keys.primary(), &[1; 16]);
    let cipher = DataCipher::new(&[2; 32]);
    // `{"k":"…"}` is 8 bytes of JSON around the string.
    for json_len in [255, 256, 257, 5_000] {
        let data = Data::from([("k".to_owned(), Value::from("x".repeat(json_len - 8)))]);
        assert_eq!(serde_json::to_vec(&data).unwrap().len(), json_len);
        let sealed = cipher.seal(&key, BINDING, &data);
        assert_eq!(sealed.len(), HEADER_LEN + NONCE_LEN + json_len + TAG_LEN);
        assert_eq!(
            cipher
                .open(keys.primary(), &key, &stored(BINDING, sealed))
                .unwrap()
                .data,
            data,
            "{json_len} bytes"
        );
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_record_bytes_never_panic_and_never_open(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
    ) {
        let keys = keys();
        let key = StoreKey::derive(keys.primary(), &[1; 16]);
        let cipher = DataCipher::new(&[2; 32]);
        proptest::prop_assert!(cipher.open(keys.primary(),&key, &stored(BINDING, bytes)).is_err());
    }

    #[test]
    fn sealed_data_round_trips(
        entries in proptest::collection::hash_map(".{0,12}", proptest::num::i64::ANY, 0..8),
    ) {
        let keys = keys();
        let key = StoreKey::derive(keys.primary(), &[1; 16]);
        let cipher = DataCipher::new(&[2; 32]);
        let entries_len = entries.len();
        let data: Data = entries.into_iter().map(|(k, v)| (k, Value::from(v))).collect();
        proptest::prop_assert_eq!(data.len(), entries_len);
        let sealed = stored(BINDING, cipher.seal(&key, BINDING, &data));
        proptest::prop_assert_eq!(cipher.open(keys.primary(),&key, &sealed).unwrap().data, data);
    }
}

#[test]
fn store_key_depends_on_sid_and_server_key() {
    let a = keys();
    let b = Keys::unchecked(&[0x43; 32]);
    let k1 = StoreKey::derive(a.primary(), &[1; 16]);
    assert_eq!(k1, StoreKey::derive(a.primary(), &[1; 16]));
    assert_ne!(k1, StoreKey::derive(a.primary(), &[2; 16]));
    assert_ne!(k1, StoreKey::derive(b.primary(), &[1; 16]));
    assert_eq!(k1.to_string().len(), 64);
    let key = StoreKey::from_bytes([0xab; 32]);
    assert_eq!(key.to_string(), "ab".repeat(32));
    assert_eq!(format!("{key:?}"), format!("StoreKey({})", "ab".repeat(32)));
}

#[test]
fn every_reason_a_record_is_refused_reads_as_what_happened() {
    for (reason, says) in [
        (
            RecordError::UnknownVersion(7),
            "unknown record format version 7",
        ),
        (RecordError::Truncated, "record data too short"),
        (RecordError::Tampered, "record data failed authentication"),
        (RecordError::Malformed, "record data is not a JSON object"),
    ] {
        assert_eq!(reason.to_string(), says);
    }
}

#[test]
fn clearing_keeps_the_reserved_keys_whole_and_wipes_the_rest() {
    let mut data = Data::from([
        (USER_KEY.to_owned(), Value::from("ada")),
        ("cart".to_owned(), Value::from("three apples")),
        ("n".to_owned(), Value::from(3)),
    ]);
    data.retain_reserved();
    assert_eq!(data.len(), 1);
    assert_eq!(user_of(&data), Some("ada"), "kept, not wiped");
    let mut nested = serde_json::json!({"a": ["secret", {"b": "more"}], "c": 1});
    wipe(&mut nested);
    assert_eq!(
        nested,
        serde_json::json!({}),
        "keys and strings taken out and zeroed"
    );
    let mut text = Value::from("secret");
    wipe(&mut text);
    assert_eq!(text, Value::from(""), "zeroed, then emptied");
}

/// A record is written in one JSON pass, into a buffer sized by what the data
/// measured when opened: data that grew, shrank or stayed as it was opened seals
/// and opens alike, and the buffer that plaintext outgrew is wiped.
#[test]
fn data_that_grew_shrank_or_stayed_since_it_was_opened_reseals_whole() {
    let keys = keys();
    let key = StoreKey::derive(keys.primary(), &[1; 16]);
    let cipher = DataCipher::new(&[2; 32]);
    let opened = |data: &Data| {
        let sealed = stored(BINDING, cipher.seal(&key, BINDING, data));
        cipher.open(keys.primary(), &key, &sealed).unwrap().data
    };
    let original: Data = [("n".to_owned(), Value::from(5))].into();
    let reopened = opened(&original);
    assert_eq!(reopened.size_hint(), br#"{"n":5}"#.len());
    assert_eq!(reopened.unchanged_text(), Some(&br#"{"n":5}"#[..]));
    // Unchanged: its text is written as it was opened.
    assert_eq!(opened(&reopened), original);
    for value in [Value::from(6), Value::from("x".repeat(5_000)), Value::Null] {
        let mut changed = opened(&original);
        changed.insert("n".into(), value.clone());
        assert_eq!(changed.unchanged_text(), None);
        let expected: Data = [("n".to_owned(), value)].into();
        assert_eq!(opened(&changed), expected);
    }
    let mut grown = Wiping(Vec::with_capacity(4));
    grown.append(b"secret");
    grown.append(&[b'!'; 100]);
    assert_eq!(&grown.0[..6], b"secret");
    assert_eq!(grown.0.len(), 106);
}
