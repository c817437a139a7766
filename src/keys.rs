//! The master secret and the keys derived from it.
//!
//! One master secret of at least [`Keys::MIN_SECRET_LEN`] random bytes is split by
//! HKDF-SHA256 (RFC 5869) into independent keys, each under its own info string:
//!
//! | key | used for |
//! | --- | --- |
//! | cookie key | AES-256-GCM sealing of the session cookie |
//! | record key | deriving each session's data key (with the cookie's record secret) |
//! | store-id key | HMAC-SHA256 of the session id, the key a record is stored under |
//! | key id | 4 bytes carried in the cookie, so the right key opens it after a rotation |
//!
//! A passphrase is not stretched: the secret must already be random. Derivation runs
//! once, when the keys are built, never per request.
//!
//! ```
//! use tower_sealed_sessions::{KeyError, Keys};
//!
//! let keys = Keys::from_secret(&[7u8; 32]).unwrap();
//! // Debug output names the key id, never key material.
//! assert!(format!("{keys:?}").starts_with("Keys { primary: KeyId("));
//!
//! let err = Keys::from_secret(b"too short").unwrap_err();
//! assert!(matches!(err, KeyError::TooShort { len: 9, .. }));
//! ```

use std::fmt;
use std::sync::Arc;

use aes_gcm::{Aes256Gcm, KeyInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// HKDF salt: fixed and public, it only separates this crate's use of a secret from
/// any other use of the same bytes (RFC 5869, section 3.1).
const HKDF_SALT: &[u8] = b"tower-sealed-sessions";
const INFO_COOKIE: &[u8] = b"tower-sealed-sessions v1 cookie key";
const INFO_RECORD: &[u8] = b"tower-sealed-sessions v1 record key";
const INFO_STORE_ID: &[u8] = b"tower-sealed-sessions v1 store-id key";
const INFO_KEY_ID: &[u8] = b"tower-sealed-sessions v1 key id";

/// The public identifier of one master secret: 4 bytes derived from it.
///
/// It travels in every cookie so that, after a rotation, the matching key is tried
/// first. It reveals nothing about the secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub(crate) [u8; 4]);

impl KeyId {
    /// The id's bytes.
    pub fn to_bytes(self) -> [u8; 4] {
        self.0
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The keys derived from one master secret.
pub(crate) struct KeySet {
    pub(crate) id: KeyId,
    /// Holds the expanded AES key schedule, so sealing costs no key setup.
    pub(crate) cookie: Aes256Gcm,
    /// Keyed once; cloning a keyed HMAC skips hashing the key block per use.
    pub(crate) record: HmacSha256,
    pub(crate) store_id: HmacSha256,
}

impl KeySet {
    fn derive(secret: &[u8]) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), secret);
        let expand = |info: &[u8]| {
            let mut okm = Zeroizing::new([0u8; 32]);
            hkdf.expand(info, okm.as_mut())
                .expect("32 bytes is a valid HKDF-SHA256 output length");
            okm
        };
        let cookie = Aes256Gcm::new_from_slice(expand(INFO_COOKIE).as_ref())
            .expect("AES-256 takes a 32-byte key");
        let record = <HmacSha256 as Mac>::new_from_slice(expand(INFO_RECORD).as_ref())
            .expect("HMAC takes a key of any length");
        let store_id = <HmacSha256 as Mac>::new_from_slice(expand(INFO_STORE_ID).as_ref())
            .expect("HMAC takes a key of any length");
        let mut id = [0u8; 4];
        hkdf.expand(INFO_KEY_ID, &mut id)
            .expect("4 bytes is a valid HKDF-SHA256 output length");
        KeySet {
            id: KeyId(id),
            cookie,
            record,
            store_id,
        }
    }
}

/// The keyring: the primary master secret's keys, which seal everything new.
///
/// Cheap to clone. `Debug` prints key ids only.
#[derive(Clone)]
pub struct Keys {
    /// Index 0 is the primary key; later entries only open (rotation).
    pub(crate) ring: Arc<[KeySet]>,
}

impl Keys {
    /// The shortest master secret accepted, in bytes (256 bits).
    pub const MIN_SECRET_LEN: usize = 32;

    /// Keys from a fresh random master secret.
    ///
    /// Sessions sealed with these keys die with the process: use it for tests and
    /// demos, and [`Keys::from_secret`] with a persisted secret in production.
    pub fn generate() -> Self {
        let mut secret = Zeroizing::new([0u8; 64]);
        rand::rng().fill_bytes(secret.as_mut());
        Self::from_secret(secret.as_ref()).expect("64 random bytes is a valid secret")
    }

    /// Keys from a master secret of at least [`Keys::MIN_SECRET_LEN`] random bytes.
    ///
    /// # Errors
    ///
    /// [`KeyError::TooShort`] when the secret is shorter than 32 bytes.
    pub fn from_secret(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < Self::MIN_SECRET_LEN {
            return Err(KeyError::TooShort {
                len: secret.len(),
                min: Self::MIN_SECRET_LEN,
            });
        }
        Ok(Keys {
            ring: Arc::new([KeySet::derive(secret)]),
        })
    }

    /// The id of the primary key, which seals every new cookie.
    pub fn primary_id(&self) -> KeyId {
        self.primary().id
    }

    pub(crate) fn primary(&self) -> &KeySet {
        &self.ring[0]
    }
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let previous: Vec<KeyId> = self.ring[1..].iter().map(|k| k.id).collect();
        f.debug_struct("Keys")
            .field("primary", &self.primary().id)
            .field("previous", &previous)
            .finish()
    }
}

/// Why a master secret was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The secret is shorter than the minimum.
    TooShort {
        /// The length given, in bytes.
        len: usize,
        /// The minimum length, in bytes.
        min: usize,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::TooShort { len, min } => write!(
                f,
                "session secret is {len} bytes long, at least {min} random bytes are needed; \
                 generate one with `cargo run --example keygen` or `openssl rand -base64 48`"
            ),
        }
    }
}

impl std::error::Error for KeyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secret_is_refused_with_a_clear_error() {
        let err = Keys::from_secret(&[1u8; 31]).unwrap_err();
        assert_eq!(err, KeyError::TooShort { len: 31, min: 32 });
        assert!(err.to_string().contains("at least 32 random bytes"));
        assert!(Keys::from_secret(&[1u8; 32]).is_ok());
    }

    #[test]
    fn derivation_is_deterministic_and_keys_are_independent() {
        let a = Keys::from_secret(&[9u8; 32]).unwrap();
        let b = Keys::from_secret(&[9u8; 32]).unwrap();
        let c = Keys::from_secret(&[8u8; 32]).unwrap();
        assert_eq!(a.primary_id(), b.primary_id());
        assert_ne!(a.primary_id(), c.primary_id());

        let tag = |mac: &HmacSha256| mac.clone().chain_update(b"x").finalize().into_bytes();
        assert_eq!(tag(&a.primary().record), tag(&b.primary().record));
        assert_ne!(tag(&a.primary().record), tag(&a.primary().store_id));
    }

    #[test]
    fn debug_prints_no_key_material() {
        let secret = [0xABu8; 32];
        let keys = Keys::from_secret(&secret).unwrap();
        let shown = format!("{keys:?} {:#?}", keys);
        assert!(shown.contains(&keys.primary_id().to_string()));
        // Neither the secret nor any derived key may appear, in any common spelling.
        let derived = {
            let hkdf = Hkdf::<Sha256>::new(Some(HKDF_SALT), &secret);
            let mut out = Vec::new();
            for info in [INFO_COOKIE, INFO_RECORD, INFO_STORE_ID] {
                let mut okm = [0u8; 32];
                hkdf.expand(info, &mut okm).unwrap();
                out.push(okm);
            }
            out
        };
        for bytes in std::iter::once(&secret).chain(derived.iter()) {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert!(!shown.to_lowercase().contains(&hex[..16]), "{shown}");
            assert!(!shown.contains(&format!("{:?}", &bytes[..4])), "{shown}");
        }
        assert!(!shown.contains("171, 171"), "{shown}");
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(Keys::generate().primary_id(), Keys::generate().primary_id());
    }
}
