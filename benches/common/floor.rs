//! The crypto floor: exactly the primitives one request of this design pays, with
//! the same crates and the same key handling (cookie key and HMAC keys prepared
//! once), and nothing else: in place, with no allocation and no copy of a key
//! schedule, so the floor is as low as these crates go.
//!
//! - `request(false)`, a read: decode and open the cookie (AES-256-GCM, 65-byte
//!   plaintext), HMAC the session id into the store key, set the record secret up
//!   as the data key (record format v3), open a small sealed record.
//! - `request(true)`, a read+write: the read, plus sealing the record again (fresh
//!   nonce).

use std::hint::black_box;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, AeadInPlace, KeyInit, Payload};
use aes_gcm::aes::Aes256Enc;
use aes_gcm::{AesGcm, Nonce, Tag};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;
/// AES-256-GCM with the encryption key schedule only, as the crate uses it.
type Aes256Gcm = AesGcm<Aes256Enc, U12>;

pub struct Floor {
    cookie_key: Aes256Gcm,
    store_id_key: HmacSha256,
    cookie: String,
    record: Vec<u8>,
}

const COOKIE_AAD: &[u8] = b"\x01abcdnnnnnnnnnnnnid";
const RECORD_AAD: &[u8] = b"tower-sealed-sessions record v1 ................................";
const DATA: &[u8] = br#"{"n":12345}"#;

impl Floor {
    pub fn new() -> Self {
        let cookie_key = Aes256Gcm::new_from_slice(&[1; 32]).unwrap();
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
        let cipher = Aes256Gcm::new_from_slice(&[7u8; 32]).unwrap();
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
            store_id_key,
            cookie: URL_SAFE_NO_PAD.encode(cookie),
            record,
        }
    }

    /// Everything a request computes, sealing the record again when `write`. Each
    /// primitive is called the cheapest way its crate allows: in place on the
    /// stack, nothing allocated, and the AES key schedule never moved (`AesGcm`
    /// borrows it).
    pub fn request(&self, write: bool) {
        let mut buf = [0u8; 256];
        let len = URL_SAFE_NO_PAD
            .decode_slice(&self.cookie, &mut buf)
            .unwrap();
        let (ciphertext, tag) = buf[17..len].split_at_mut(len - 17 - 16);
        self.cookie_key
            .decrypt_in_place_detached(
                Nonce::from_slice(&[9; 12]),
                COOKIE_AAD,
                ciphertext,
                Tag::from_slice(tag),
            )
            .unwrap();
        let store_key = self
            .store_id_key
            .clone()
            .chain_update(&ciphertext[..16])
            .finalize();
        black_box(store_key);
        let aes = Aes256Enc::new_from_slice(&ciphertext[16..48]).unwrap();
        let cipher = AesGcm::<&Aes256Enc, U12>::from(&aes);
        let (msg, tag) = self.record.split_at(self.record.len() - 16);
        let mut data = [0u8; 64];
        let data = &mut data[..msg.len()];
        data.copy_from_slice(msg);
        cipher
            .decrypt_in_place_detached(
                Nonce::from_slice(&[5; 12]),
                RECORD_AAD,
                data,
                Tag::from_slice(tag),
            )
            .unwrap();
        black_box(&data);
        if write {
            let mut nonce = [0u8; 12];
            rand::rng().fill_bytes(&mut nonce);
            let tag = cipher
                .encrypt_in_place_detached(Nonce::from_slice(&nonce), RECORD_AAD, data)
                .unwrap();
            black_box((&data, tag));
        }
    }
}
