//! The session cookie: its sealed format (v1), reading it from requests, and its
//! attributes.
//!
//! The cookie carries the half of a session the server does not keep: the session id
//! and the record secret without which the stored data cannot be decrypted. It is
//! sealed with AES-256-GCM under the cookie key.
//!
//! Format v1, before URL-safe base64 without padding (131 characters):
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | format version, `1` |
//! | 4 | key id of the key that sealed it |
//! | 12 | random nonce |
//! | 65 + 16 | ciphertext and GCM tag of the plaintext below |
//!
//! Plaintext (65 bytes): session id (16 random bytes), record secret (32 random
//! bytes), created-at and lifespan deadline (big-endian Unix milliseconds; all ones
//! means no lifespan), flags (bit 0: remember-me; other bits must be zero).
//!
//! Associated data: the version byte, the key id and the cookie name, so a cookie
//! cannot be replayed under another name or read as another format.

use std::fmt;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::aead::consts::U12;
use aes_gcm::{Nonce, Tag};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::clock::Timestamp;
use crate::keys::{KeyId, Keys};

mod attributes;
mod domains;
mod header;

pub(crate) use attributes::CookieConfig;
pub use domains::CookieDomain;
pub(crate) use domains::{pick, request_host};
pub(crate) use header::request_values;

const VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
const PLAINTEXT_LEN: usize = 16 + 32 + 8 + 8 + 1;
const SEALED_LEN: usize = HEADER_LEN + PLAINTEXT_LEN + TAG_LEN;
/// Longer values are refused before any decoding work.
const MAX_ENCODED_LEN: usize = 256;
/// The length of a sealed value: URL-safe base64 of [`SEALED_LEN`] bytes, no
/// padding (131 characters).
pub(crate) const ENCODED_LEN: usize = (SEALED_LEN * 4).div_ceil(3);
const FLAG_REMEMBER_ME: u8 = 1;

/// The lifetime facts of a session, as its cookie carries them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) created_at: Timestamp,
    pub(crate) lifespan_deadline: Timestamp,
    pub(crate) remember_me: bool,
}

/// What the cookie holds once opened.
#[derive(Clone)]
pub(crate) struct CookieData {
    pub(crate) sid: [u8; 16],
    pub(crate) record_secret: Zeroizing<[u8; 32]>,
    pub(crate) created_at: Timestamp,
    pub(crate) lifespan_deadline: Timestamp,
    pub(crate) remember_me: bool,
}

impl CookieData {
    /// A new identity: fresh random session id and record secret.
    pub(crate) fn generate(
        created_at: Timestamp,
        lifespan_deadline: Timestamp,
        remember_me: bool,
    ) -> Self {
        let mut data = CookieData {
            sid: [0; 16],
            record_secret: Zeroizing::new([0; 32]),
            created_at,
            lifespan_deadline,
            remember_me,
        };
        data.regenerate_identity();
        data
    }

    /// The session's lifetime facts.
    #[inline]
    pub(crate) fn meta(&self) -> Meta {
        Meta {
            created_at: self.created_at,
            lifespan_deadline: self.lifespan_deadline,
            remember_me: self.remember_me,
        }
    }

    /// Replaces the session id and the record secret with fresh random ones.
    pub(crate) fn regenerate_identity(&mut self) {
        // rand's thread generator is a CSPRNG seeded from the OS, and fill_bytes has
        // no modulo bias.
        let mut rng = rand::rng();
        rng.fill_bytes(&mut self.sid);
        rng.fill_bytes(self.record_secret.as_mut());
    }

    fn encode_plaintext(&self) -> Zeroizing<[u8; PLAINTEXT_LEN]> {
        let mut out = Zeroizing::new([0u8; PLAINTEXT_LEN]);
        out[..16].copy_from_slice(&self.sid);
        out[16..48].copy_from_slice(self.record_secret.as_ref());
        out[48..56].copy_from_slice(&self.created_at.unix_millis().to_be_bytes());
        out[56..64].copy_from_slice(&self.lifespan_deadline.unix_millis().to_be_bytes());
        out[64] = if self.remember_me {
            FLAG_REMEMBER_ME
        } else {
            0
        };
        out
    }

    fn decode_plaintext(bytes: &[u8]) -> Result<Self, CookieError> {
        if bytes.len() != PLAINTEXT_LEN || bytes[64] & !FLAG_REMEMBER_ME != 0 {
            return Err(CookieError::Malformed);
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let mut data = CookieData {
            sid: [0; 16],
            record_secret: Zeroizing::new([0; 32]),
            created_at: Timestamp::from_unix_millis(u64_at(48)),
            lifespan_deadline: Timestamp::from_unix_millis(u64_at(56)),
            remember_me: bytes[64] & FLAG_REMEMBER_ME != 0,
        };
        data.sid.copy_from_slice(&bytes[..16]);
        data.record_secret.copy_from_slice(&bytes[16..48]);
        Ok(data)
    }
}

/// Why a cookie value did not open. Used for tracing only: every reason means "no
/// session" to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CookieError {
    Oversized,
    NotBase64,
    Truncated,
    UnknownVersion(u8),
    UnknownKey(KeyId),
    /// The AEAD refused it: forged, altered, or sealed for another cookie name.
    Tampered,
    Malformed,
}

impl fmt::Display for CookieError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CookieError::Oversized => write!(f, "longer than {MAX_ENCODED_LEN} characters"),
            CookieError::NotBase64 => f.write_str("not URL-safe base64"),
            CookieError::Truncated => f.write_str("too short for a sealed session cookie"),
            CookieError::UnknownVersion(v) => write!(f, "unknown format version {v}"),
            CookieError::UnknownKey(id) => {
                write!(f, "sealed with key {id}, which is not in the keyring")
            }
            CookieError::Tampered => f.write_str("authentication failed (forged or altered)"),
            CookieError::Malformed => f.write_str("authentic but malformed contents"),
        }
    }
}

/// An opened cookie and which key of the ring opened it (0 is the primary).
pub(crate) struct Opened {
    pub(crate) data: CookieData,
    pub(crate) key_index: usize,
}

/// Seals `data` under the primary key for the cookie called `name`.
pub(crate) fn seal(keys: &Keys, name: &str, data: &CookieData) -> String {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    seal_with_nonce(keys, name, data, nonce)
}

fn seal_with_nonce(keys: &Keys, name: &str, data: &CookieData, nonce: [u8; NONCE_LEN]) -> String {
    let key = keys.primary();
    key.count_seal();
    // Sealed in place, on the stack: the header, then the plaintext encrypted where
    // it lies, then the tag. The associated data is the header and the cookie name.
    let mut sealed = Zeroizing::new([0u8; SEALED_LEN]);
    sealed[0] = VERSION;
    sealed[1..5].copy_from_slice(&key.id.0);
    sealed[5..HEADER_LEN].copy_from_slice(&nonce);
    let (header, body) = sealed.split_at_mut(HEADER_LEN);
    let (message, tag_out) = body.split_at_mut(PLAINTEXT_LEN);
    message.copy_from_slice(data.encode_plaintext().as_ref());
    let tag = with_aad(header, name, |aad| {
        key.cookie
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, message)
            .expect("AES-GCM encrypts any message shorter than 64 GiB")
    });
    tag_out.copy_from_slice(&tag);
    URL_SAFE_NO_PAD.encode(sealed.as_ref())
}

/// Opens a cookie value, trying every key of the ring whose id matches.
pub(crate) fn open(
    keys: &Keys,
    name: &str,
    value: impl AsRef<[u8]>,
) -> Result<Opened, CookieError> {
    let value = value.as_ref();
    if value.len() > MAX_ENCODED_LEN {
        return Err(CookieError::Oversized);
    }
    let mut buf = [0u8; MAX_ENCODED_LEN];
    let len = URL_SAFE_NO_PAD
        .decode_slice(value, &mut buf)
        .map_err(|_| CookieError::NotBase64)?;
    let sealed = &buf[..len];
    if sealed.is_empty() {
        return Err(CookieError::Truncated);
    }
    if sealed[0] != VERSION {
        return Err(CookieError::UnknownVersion(sealed[0]));
    }
    if sealed.len() != SEALED_LEN {
        return Err(CookieError::Truncated);
    }
    let mut id = [0u8; 4];
    id.copy_from_slice(&sealed[1..5]);
    let id = KeyId(id);
    let nonce = Nonce::from_slice(&sealed[5..HEADER_LEN]);
    let (ciphertext, tag) = sealed[HEADER_LEN..].split_at(PLAINTEXT_LEN);
    let tag = Tag::from_slice(tag);
    with_aad(&sealed[..HEADER_LEN], name, |aad| {
        open_sealed(keys, id, nonce, aad, ciphertext, tag)
    })
}

/// Calls `f` with a cookie's associated data: its header, then the cookie name.
/// On the stack for names of usual length.
fn with_aad<R>(header: &[u8], name: &str, f: impl FnOnce(&[u8]) -> R) -> R {
    let mut buf = [0u8; HEADER_LEN + 64];
    match buf.get_mut(..header.len() + name.len()) {
        Some(aad) => {
            let (head, tail) = aad.split_at_mut(header.len());
            head.copy_from_slice(header);
            tail.copy_from_slice(name.as_bytes());
            f(aad)
        }
        None => f(&[header, name.as_bytes()].concat()),
    }
}

/// Decrypts with every key of the ring whose id is `id`.
fn open_sealed(
    keys: &Keys,
    id: KeyId,
    nonce: &Nonce<U12>,
    aad: &[u8],
    ciphertext: &[u8],
    tag: &Tag,
) -> Result<Opened, CookieError> {
    let mut result = Err(CookieError::UnknownKey(id));
    for (key_index, key) in keys.ring.iter().enumerate() {
        if key.id != id {
            continue;
        }
        // Decrypted in place, on the stack, and wiped afterwards.
        let mut plaintext = Zeroizing::new([0u8; PLAINTEXT_LEN]);
        plaintext.copy_from_slice(ciphertext);
        match key
            .cookie
            .decrypt_in_place_detached(nonce, aad, plaintext.as_mut(), tag)
        {
            Ok(()) => {
                let data = CookieData::decode_plaintext(plaintext.as_ref())?;
                return Ok(Opened { data, key_index });
            }
            // Ids are 4 bytes, so two keys of a ring may share one; try the next.
            Err(_) => result = Err(CookieError::Tampered),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::unchecked(&[0x42; 32])
    }

    fn sample() -> CookieData {
        CookieData {
            sid: [0x11; 16],
            record_secret: Zeroizing::new([0x22; 32]),
            created_at: Timestamp::from_unix_millis(1_700_000_000_000),
            lifespan_deadline: Timestamp::from_unix_millis(1_700_086_400_000),
            remember_me: true,
        }
    }

    /// Sealed by format v1 with the key, nonce and contents above. Later versions of
    /// the crate must still open it: never change this string.
    const V1_VECTOR: &str = "Ab0B0ooHBwcHBwcHBwcHBweNpuekWIkmvm6q06wq2BafN_tnefzCQIpEXXkzxcoO6m8vjjk3p5UCpgzGPYK29b_jwfQEr3FOCOkjlUsLhIq9-4DGQhKJJTbAJTvIrn23dx0";

    #[test]
    fn v1_test_vector_is_stable_and_opens() {
        let sealed = seal_with_nonce(&keys(), "id", &sample(), [7; 12]);
        assert_eq!(sealed, V1_VECTOR);
        let opened = open(&keys(), "id", V1_VECTOR).unwrap();
        assert_eq!(opened.key_index, 0);
        assert_eq!(opened.data.sid, [0x11; 16]);
        assert_eq!(*opened.data.record_secret, [0x22; 32]);
        assert_eq!(opened.data.created_at.unix_millis(), 1_700_000_000_000);
        assert_eq!(
            opened.data.lifespan_deadline.unix_millis(),
            1_700_086_400_000
        );
        assert!(opened.data.remember_me);
    }

    #[test]
    fn the_encoded_length_is_that_of_a_sealed_value() {
        let data = CookieData::generate(Timestamp::from_unix_millis(0), Timestamp::NEVER, false);
        assert_eq!(seal(&Keys::generate(), "id", &data).len(), ENCODED_LEN);
        assert_eq!(ENCODED_LEN, 131);
    }

    #[test]
    fn round_trip_with_random_nonce_and_fixed_length() {
        let data = CookieData::generate(Timestamp::from_unix_millis(5), Timestamp::NEVER, false);
        let a = seal(&keys(), "id", &data);
        let b = seal(&keys(), "id", &data);
        assert_ne!(a, b, "each seal draws a fresh nonce");
        assert_eq!(a.len(), 131);
        let opened = open(&keys(), "id", &a).unwrap();
        assert_eq!(opened.data.sid, data.sid);
        assert!(opened.data.lifespan_deadline.is_never());
        assert!(!opened.data.remember_me);
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let sealed = URL_SAFE_NO_PAD
            .decode(seal(&keys(), "id", &sample()))
            .unwrap();
        for byte in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[byte] ^= 1 << bit;
                let value = URL_SAFE_NO_PAD.encode(&bad);
                assert!(
                    open(&keys(), "id", &value).is_err(),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn foreign_name_key_truncation_and_garbage_are_rejected() {
        let value = seal(&keys(), "id", &sample());
        assert_eq!(
            open(&keys(), "other", &value).err(),
            Some(CookieError::Tampered)
        );
        let other = Keys::unchecked(&[0x43; 32]);
        assert!(matches!(
            open(&other, "id", &value),
            Err(CookieError::UnknownKey(_))
        ));
        assert_eq!(
            open(&keys(), "id", &value[..100]).err(),
            Some(CookieError::Truncated)
        );
        assert_eq!(open(&keys(), "id", "").err(), Some(CookieError::Truncated));
        assert_eq!(
            open(&keys(), "id", "!!!").err(),
            Some(CookieError::NotBase64)
        );
        assert_eq!(
            open(&keys(), "id", "A".repeat(4096)).err(),
            Some(CookieError::Oversized)
        );
        assert_eq!(
            open(&keys(), "id", "Ag").err(),
            Some(CookieError::UnknownVersion(2))
        );
    }

    #[test]
    fn the_length_limits_hold_at_their_boundaries() {
        let value = seal(&keys(), "id", &sample());
        assert_eq!(value.len(), 131, "the documented length");
        // 256 characters are decoded (and are too long for a cookie); 257 are not.
        let at_limit = "A".repeat(MAX_ENCODED_LEN);
        assert_eq!(
            open(&keys(), "id", &at_limit).err(),
            Some(CookieError::UnknownVersion(0))
        );
        let over = "A".repeat(MAX_ENCODED_LEN + 1);
        assert_eq!(
            open(&keys(), "id", &over).err(),
            Some(CookieError::Oversized)
        );
        // One byte short of or past the sealed length is truncated, not opened.
        let sealed = URL_SAFE_NO_PAD.decode(&value).unwrap();
        for len in [SEALED_LEN - 1, SEALED_LEN + 1] {
            let mut bytes = sealed.clone();
            bytes.resize(len, 0);
            let text = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(
                open(&keys(), "id", &text).err(),
                Some(CookieError::Truncated),
                "{len}"
            );
        }
    }

    #[test]
    fn every_reason_reads_as_what_happened() {
        let id = KeyId([1, 2, 3, 4]);
        for (reason, says) in [
            (CookieError::Oversized, "longer than 256 characters"),
            (CookieError::NotBase64, "not URL-safe base64"),
            (CookieError::Truncated, "too short"),
            (CookieError::UnknownVersion(9), "unknown format version 9"),
            (
                CookieError::UnknownKey(id),
                "sealed with key 01020304, which is not in the keyring",
            ),
            (CookieError::Tampered, "authentication failed"),
            (CookieError::Malformed, "malformed"),
        ] {
            assert!(reason.to_string().contains(says), "{reason}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_mutation_of_a_valid_cookie_is_rejected(
            at in 0usize..SEALED_LEN,
            xor in 1u8..=255,
            cut in 0usize..SEALED_LEN,
            extra in proptest::collection::vec(proptest::num::u8::ANY, 1..8),
        ) {
            let sealed = URL_SAFE_NO_PAD.decode(seal(&keys(), "id", &sample())).unwrap();
            let mut flipped = sealed.clone();
            flipped[at] ^= xor;
            let truncated = &sealed[..cut];
            let extended = [&sealed[..], &extra[..]].concat();
            for bad in [flipped, truncated.to_vec(), extended] {
                let value = URL_SAFE_NO_PAD.encode(&bad);
                proptest::prop_assert!(open(&keys(), "id", &value).is_err());
            }
        }

        #[test]
        fn arbitrary_cookie_values_never_panic(value in ".{0,300}") {
            let _ = open(&keys(), "id", &value);
        }
    }

    #[test]
    fn unknown_flag_bits_are_rejected_even_when_authentic() {
        let mut data = sample().encode_plaintext();
        data[64] = 0b10;
        assert_eq!(
            CookieData::decode_plaintext(data.as_ref()).err(),
            Some(CookieError::Malformed)
        );
    }
}
