//! The crypto floor: exactly the primitives one request of this design pays, with
//! the same crates and the same key handling (cookie key and HMAC keys prepared
//! once), and nothing else.
//!
//! ```text
//! cargo bench --bench crypto_floor
//! ```
//!
//! - `read`: decode and open the cookie (AES-256-GCM, 65-byte plaintext), HMAC the
//!   session id into the store key, HMAC the record secret into the data key, set
//!   that AES key up, open a small sealed record.
//! - `read_write`: `read`, plus sealing the record again (fresh nonce).

use std::hint::black_box;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::aes::Aes256Enc;
use aes_gcm::{AesGcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;
/// AES-256-GCM with the encryption key schedule only, as the crate uses it.
type Aes256Gcm = AesGcm<Aes256Enc, U12>;

struct Floor {
    cookie_key: Aes256Gcm,
    record_key: HmacSha256,
    store_id_key: HmacSha256,
    cookie: String,
    record: Vec<u8>,
}

const COOKIE_AAD: &[u8] = b"\x01abcdnnnnnnnnnnnnid";
const RECORD_AAD: &[u8] = b"tower-sealed-sessions record v1 ................................";
const DATA: &[u8] = br#"{"n":12345}"#;

impl Floor {
    fn new() -> Self {
        let cookie_key = Aes256Gcm::new_from_slice(&[1; 32]).unwrap();
        let record_key = <HmacSha256 as Mac>::new_from_slice(&[2; 32]).unwrap();
        let store_id_key = <HmacSha256 as Mac>::new_from_slice(&[3; 32]).unwrap();
        let plaintext = [7u8; 65];
        let sealed = cookie_key
            .encrypt(
                Nonce::from_slice(&[9; 12]),
                Payload {
                    msg: &plaintext,
                    aad: COOKIE_AAD,
                },
            )
            .unwrap();
        let mut cookie = vec![0u8; 17];
        cookie.extend_from_slice(&sealed);
        let data_key = record_key
            .clone()
            .chain_update([7u8; 32])
            .finalize()
            .into_bytes();
        let cipher = Aes256Gcm::new_from_slice(&data_key).unwrap();
        let record = cipher
            .encrypt(
                Nonce::from_slice(&[5; 12]),
                Payload {
                    msg: DATA,
                    aad: RECORD_AAD,
                },
            )
            .unwrap();
        Floor {
            cookie_key,
            record_key,
            store_id_key,
            cookie: URL_SAFE_NO_PAD.encode(cookie),
            record,
        }
    }

    /// Everything a read-only request computes; returns the record's cipher.
    fn read(&self) -> Aes256Gcm {
        let mut buf = [0u8; 256];
        let len = URL_SAFE_NO_PAD
            .decode_slice(&self.cookie, &mut buf)
            .unwrap();
        let plaintext = self
            .cookie_key
            .decrypt(
                Nonce::from_slice(&[9; 12]),
                Payload {
                    msg: &buf[17..len],
                    aad: COOKIE_AAD,
                },
            )
            .unwrap();
        let store_key = self
            .store_id_key
            .clone()
            .chain_update(&plaintext[..16])
            .finalize();
        black_box(store_key);
        let data_key = self
            .record_key
            .clone()
            .chain_update(&plaintext[16..48])
            .finalize();
        let cipher = Aes256Gcm::new_from_slice(&data_key.into_bytes()).unwrap();
        let data = cipher
            .decrypt(
                Nonce::from_slice(&[5; 12]),
                Payload {
                    msg: &self.record,
                    aad: RECORD_AAD,
                },
            )
            .unwrap();
        black_box(data);
        cipher
    }

    fn read_write(&self) {
        let cipher = self.read();
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: DATA,
                    aad: RECORD_AAD,
                },
            )
            .unwrap();
        black_box(sealed);
    }
}

fn bench(c: &mut Criterion) {
    let floor = Floor::new();
    let mut group = c.benchmark_group("crypto_floor");
    group.bench_function("read", |b| b.iter(|| black_box(floor.read())));
    group.bench_function("read_write", |b| b.iter(|| floor.read_write()));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
