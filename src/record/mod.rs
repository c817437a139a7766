//! The server-side half of a session: the [`Record`], its [`StoreKey`], and the sealing
//! of session data.
//!
//! A record is stored under `HMAC-SHA256(store-id key, session id)`, never under the
//! session id itself, so a dump of the store yields nothing that can be replayed as a
//! cookie. Its data is sealed with AES-256-GCM under a per-session key, the
//! record secret: 256 random bits that travel only inside the sealed cookie, so
//! the store plus the server key still cannot read a session without its cookie.
//! The store key is part of the associated data, so a record moved to another key
//! no longer opens.
//!
//! Sealed data, format v3: version byte `3`, a flags byte (bit 0: remember-me),
//! 12-byte random nonce, ciphertext and tag of the JSON object that maps keys to
//! values. The associated data binds, besides the store key, what the store keeps
//! beside the sealed bytes and the layer trusts: the record's version and lifespan,
//! and the flags. So the record, not the cookie, says whether the session is
//! remembered and when it ends, and a store writer can neither change those nor
//! pair sealed data with another version.
//!
//! Earlier formats still open, and every write seals v3. Format v2 is v3 with
//! version byte `2`, its own associated-data prefix, and the data key
//! `HMAC-SHA256(record key, record secret)`. The HMAC bought nothing the cookie's
//! seal does not already give (the secret is only ever had by opening a cookie,
//! which takes the same master secret) and cost about 150 ns a request, so v3
//! uses the secret itself. Format v1 (version byte `1`, no flags, only the store
//! key bound) has the v2 data key.

use std::fmt;
use std::hash::Hasher;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{KeyInit, Nonce, Tag};

use bytes::Bytes;
use hmac::Mac;
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

use crate::clock::Timestamp;
use crate::keys::{Aes256Gcm, KeySet};

mod data;

use data::Text;
pub(crate) use data::{Data, USER_KEY, is_reserved, user_in, user_of, wipe};

const VERSION: u8 = 3;
const V2: u8 = 2;
const V1: u8 = 1;
/// Version and flags.
const HEADER_LEN: usize = 2;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const AAD_PREFIX_V1: &[u8] = b"tower-sealed-sessions record v1";
const AAD_PREFIX_V2: &[u8] = b"tower-sealed-sessions record v2";
const AAD_PREFIX: &[u8] = b"tower-sealed-sessions record v3";
/// The AAD of formats v2 and v3: prefix, store key, version, lifespan, flags.
const AAD_LEN: usize = AAD_PREFIX.len() + 32 + 8 + 8 + 1;
const REMEMBER_ME: u8 = 1;

/// The key a record is stored under: an HMAC of the session id, 32 bytes.
///
/// Not secret and not replayable: it cannot be turned back into a session id.
/// [`Display`](fmt::Display) gives 64 lowercase hex digits, for stores keyed by text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoreKey([u8; 32]);

impl StoreKey {
    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key from its bytes, for stores that keep keys in binary.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        StoreKey(bytes)
    }

    #[inline]
    pub(crate) fn derive(keys: &KeySet, sid: &[u8; 16]) -> Self {
        let tag = keys.store_id.clone().chain_update(sid).finalize();
        StoreKey(tag.into_bytes().into())
    }
}

impl fmt::Display for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreKey({self})")
    }
}

impl StoreKey {
    /// A key from its 64 hex digits (as [`Display`](fmt::Display) writes them,
    /// either case), as a store reads it back from a key name.
    #[cfg_attr(not(any(feature = "redis", feature = "postgres")), allow(dead_code))]
    pub(crate) fn from_hex(hex: &[u8]) -> Option<Self> {
        if hex.len() != 64 {
            return None;
        }
        let digit = |c: u8| (c as char).to_digit(16);
        let mut bytes = [0u8; 32];
        for (byte, pair) in bytes.iter_mut().zip(hex.chunks(2)) {
            *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Some(StoreKey(bytes))
    }
}

/// Hashes a [`StoreKey`] by its own bytes. Store keys are HMAC-SHA256 outputs:
/// uniformly random, and unknown to clients, who therefore cannot aim collisions
/// at a bucket. SipHash over them would buy nothing and cost about 250
/// instructions per lookup (callgrind). The maps of the memory store and of the
/// record cache use it.
#[derive(Default)]
#[cfg_attr(
    not(any(feature = "memory-store", feature = "redis", feature = "postgres")),
    allow(dead_code)
)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(2) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// When a record stops being valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// Slid forward by activity (idle timeout); never later than `lifespan`.
    pub idle: Timestamp,
    /// Absolute end of the session (lifespan or remember-me duration).
    pub lifespan: Timestamp,
    /// When a request last used the session, to within the touch interval. Not a
    /// deadline, but it moves whenever they do: creates, updates and touches write
    /// it, and the per-user session list shows it as the last activity.
    pub active: Timestamp,
}

impl Deadlines {
    /// The earlier of the two deadlines: when the store may drop the record.
    #[inline]
    pub fn expires_at(&self) -> Timestamp {
        self.idle.min(self.lifespan)
    }

    /// Whether the record is expired at `now`.
    #[inline]
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at()
    }

    /// These deadlines, earned by a request that did not change the lifespan,
    /// merged with the `stored` ones: the stored lifespan stands (another request
    /// may have extended it or set remember-me, with a cookie this request does not
    /// carry yet), and activity never pulls the idle deadline in.
    #[inline]
    pub(crate) fn slide(self, stored: Deadlines) -> Deadlines {
        Deadlines {
            idle: self.idle.max(stored.idle).min(stored.lifespan),
            lifespan: stored.lifespan,
            active: self.active.max(stored.active),
        }
    }
}

/// What a [`SessionStore`](crate::store::SessionStore) keeps for one session.
///
/// The store treats `data` as opaque bytes; it uses `deadlines` for expiry and
/// `version` for compare-and-set.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// Incremented by every data update; the compare-and-set token.
    pub version: u64,
    /// When the record expires.
    pub deadlines: Deadlines,
    /// The sealed session data: opaque to the store, which keeps it as it is (the
    /// format is in the crate documentation's "Wire formats").
    pub data: Bytes,
}

impl Record {
    /// A record from its parts (for stores that decode records they keep).
    pub fn new(version: u64, deadlines: Deadlines, data: Bytes) -> Self {
        Record {
            version,
            deadlines,
            data,
        }
    }
}

/// What a record's seal binds besides its store key and data: the fields the
/// store keeps beside the sealed bytes that the layer relies on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Binding {
    /// The record's compare-and-set version.
    pub(crate) version: u64,
    /// The session's lifespan deadline.
    pub(crate) lifespan: Timestamp,
    /// Whether the session is remembered (exempt from the idle timeout).
    pub(crate) remember_me: bool,
}

impl Binding {
    fn flags(self) -> u8 {
        if self.remember_me { REMEMBER_ME } else { 0 }
    }
}

/// A record's data, opened, with what the record says of the session.
#[derive(Debug, PartialEq)]
pub(crate) struct OpenedRecord {
    pub(crate) data: Data,
    /// The remember-me flag the record was sealed with; `None` for format v1,
    /// which did not keep it.
    pub(crate) remember_me: Option<bool>,
    /// The user the data ties the session to, found while the data was checked.
    pub(crate) user: Option<String>,
}

impl OpenedRecord {
    /// Whether the session is remembered: as the record says. A v1 record did not
    /// keep the flag, so the cookie's stands, unless the record has an idle
    /// deadline before its lifespan, which only a session not remembered gets.
    pub(crate) fn remember_me(&self, cookie_says: bool, deadlines: &Deadlines) -> bool {
        self.remember_me
            .unwrap_or(cookie_says && deadlines.idle >= deadlines.lifespan)
    }
}

/// Why stored data did not open: tampered in the store, moved to another key, or
/// paired with the wrong cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordError {
    UnknownVersion(u8),
    Truncated,
    Tampered,
    Malformed,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::UnknownVersion(v) => write!(f, "unknown record format version {v}"),
            RecordError::Truncated => f.write_str("record data too short"),
            RecordError::Tampered => f.write_str("record data failed authentication"),
            RecordError::Malformed => f.write_str("record data is not a JSON object"),
        }
    }
}

/// One session's record secret, from its cookie (wiped when dropped): the data
/// key of format v3, and what the data key of v1 and v2 was derived from. The
/// AES-GCM cipher is set up from the key where it is used, on the stack: its key
/// schedule (about 1 KB) is never boxed, nor moved from the load through the
/// session to the write.
pub(crate) struct DataCipher {
    secret: Zeroizing<[u8; 32]>,
    /// Set when writes seal format v2 (`record_format: 2`, for a rolling upgrade
    /// from a release that opens no v3): the v2 data key.
    v2: Option<Zeroizing<[u8; 32]>>,
}

impl DataCipher {
    pub(crate) fn new(record_secret: &[u8; 32]) -> Self {
        DataCipher {
            secret: Zeroizing::new(*record_secret),
            v2: None,
        }
    }

    /// The same, sealing format v2 with the data key derived under `keys`.
    pub(crate) fn sealing_v2(mut self, keys: &KeySet) -> Self {
        self.v2 = Some(self.derived_key(keys));
        self
    }

    /// The AEAD under `key` (its key schedule is wiped when it is dropped).
    fn aead(key: &[u8; 32]) -> Aes256Gcm {
        // `new` over a fixed-size key: `new_from_slice` returns the 1 KB cipher
        // inside a `Result`, which costs it one more copy.
        Aes256Gcm::new(key.into())
    }

    /// The format a write seals.
    fn sealed_version(&self) -> u8 {
        if self.v2.is_some() { V2 } else { VERSION }
    }

    /// The data key of formats v1 and v2: `HMAC-SHA256(record key, record secret)`
    /// under the keys that sealed the cookie.
    fn derived_key(&self, keys: &KeySet) -> Zeroizing<[u8; 32]> {
        let key = keys
            .record
            .clone()
            .chain_update(self.secret.as_ref())
            .finalize();
        Zeroizing::new(<[u8; 32]>::from(key.into_bytes()))
    }

    /// Seals `data` as the record of `store_key` with what `binding` says.
    pub(crate) fn seal(&self, store_key: &StoreKey, binding: Binding, data: &Data) -> Bytes {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        // The JSON is written once, straight into the record, sized by what the
        // data measured when it was opened; a buffer it outgrows is wiped before
        // it is freed, so no copy of the plaintext is left behind. Fresh data
        // (a new session) has no such measure, and is measured first.
        let json = match data.size_hint() {
            0 => {
                let mut counter = Counter(0);
                serde_json::to_writer(&mut counter, data)
                    .expect("a map of JSON values always serializes");
                counter.0
            }
            opened => opened,
        };
        let mut out = Wiping(Vec::with_capacity(HEADER_LEN + NONCE_LEN + json + TAG_LEN));
        out.0
            .extend_from_slice(&[self.sealed_version(), binding.flags()]);
        out.0.extend_from_slice(&nonce);
        match data.unchanged_text() {
            Some(text) => out.append(text),
            None => serde_json::to_writer(&mut out, data)
                .expect("a map of JSON values always serializes"),
        }
        out.reserve(TAG_LEN);
        self.seal_tail(store_key, binding, out.0, nonce)
    }

    /// Encrypts, in place, everything after the header of `out`, and appends the
    /// tag: one buffer for the whole record, and no plaintext copy left behind.
    fn seal_tail(
        &self,
        store_key: &StoreKey,
        binding: Binding,
        mut out: Vec<u8>,
        nonce: [u8; NONCE_LEN],
    ) -> Bytes {
        let (prefix, key) = match &self.v2 {
            Some(key) => (AAD_PREFIX_V2, key),
            None => (AAD_PREFIX, &self.secret),
        };
        let aad = aad(prefix, store_key, binding);
        let tag = Self::aead(key)
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                &aad,
                &mut out[HEADER_LEN + NONCE_LEN..],
            )
            .expect("AES-GCM encrypts any message shorter than 64 GiB");
        out.extend_from_slice(&tag);
        if out.len() == out.capacity() {
            Bytes::from(out)
        } else {
            // No spare capacity stays with a record (a store in memory keeps it);
            // what is copied and freed here is ciphertext.
            Bytes::copy_from_slice(&out)
        }
    }

    #[cfg(test)]
    fn seal_with_nonce(
        &self,
        store_key: &StoreKey,
        binding: Binding,
        msg: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Bytes {
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + msg.len() + TAG_LEN);
        out.extend_from_slice(&[self.sealed_version(), binding.flags()]);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(msg);
        self.seal_tail(store_key, binding, out, nonce)
    }

    /// Opens the data of `record`, stored under `store_key`; `keys` (those that
    /// opened the cookie) derive the data key of a record in format v1 or v2.
    pub(crate) fn open(
        &self,
        keys: &KeySet,
        store_key: &StoreKey,
        record: &Record,
    ) -> Result<OpenedRecord, RecordError> {
        let sealed = &record.data[..];
        let (&version, rest) = sealed.split_first().ok_or(RecordError::Truncated)?;
        let (remember_me, rest, aad) = match version {
            VERSION | V2 => {
                let (&flags, rest) = rest.split_first().ok_or(RecordError::Truncated)?;
                if flags & !REMEMBER_ME != 0 {
                    return Err(RecordError::Tampered);
                }
                let binding = Binding {
                    version: record.version,
                    lifespan: record.deadlines.lifespan,
                    remember_me: flags == REMEMBER_ME,
                };
                let prefix = if version == VERSION {
                    AAD_PREFIX
                } else {
                    AAD_PREFIX_V2
                };
                (
                    Some(binding.remember_me),
                    rest,
                    Aad::V2(aad(prefix, store_key, binding)),
                )
            }
            V1 => (None, rest, Aad::V1(aad_v1(store_key))),
            other => return Err(RecordError::UnknownVersion(other)),
        };
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(RecordError::Truncated);
        }
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (msg, tag) = rest.split_at(rest.len() - TAG_LEN);
        let aad = aad.as_bytes();
        let derived;
        let key = match version {
            VERSION => &self.secret,
            _ => {
                derived = self.derived_key(keys);
                &derived
            }
        };
        // Decrypted in place, in the buffer the session keeps.
        let mut text = Text::new(msg.to_vec());
        Self::aead(key)
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                aad,
                &mut text,
                Tag::from_slice(tag),
            )
            .map_err(|_| RecordError::Tampered)?;
        let opened = Data::from_text(text).ok_or(RecordError::Malformed);
        opened.map(|(data, user)| OpenedRecord {
            data,
            remember_me,
            user,
        })
    }
}

/// An `io::Write` that only counts the bytes written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A buffer for plaintext that wipes what it outgrows: growing moves the bytes
/// to a larger allocation and zeroes the old one before it is freed, which
/// `Vec`'s own growth does not.
struct Wiping(Vec<u8>);

impl Wiping {
    /// Room for `more` bytes beyond the length.
    #[inline]
    fn reserve(&mut self, more: usize) {
        if self.0.capacity() - self.0.len() < more {
            self.grow(more);
        }
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, more: usize) {
        let needed = self.0.len() + more;
        let mut grown = Vec::with_capacity(needed.max(2 * self.0.capacity()));
        grown.extend_from_slice(&self.0);
        // Zeroes the whole allocation, spare capacity included.
        self.0.zeroize();
        self.0 = grown;
    }

    #[inline]
    fn append(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        self.0.extend_from_slice(bytes);
    }
}

impl std::io::Write for Wiping {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The associated data of either format.
enum Aad {
    V1([u8; AAD_PREFIX_V1.len() + 32]),
    V2([u8; AAD_LEN]),
}

impl Aad {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Aad::V1(aad) => aad,
            Aad::V2(aad) => aad,
        }
    }
}

/// The associated data of formats v2 and v3 (`prefix` tells them apart).
fn aad(prefix: &[u8], store_key: &StoreKey, binding: Binding) -> [u8; AAD_LEN] {
    let mut aad = [0u8; AAD_LEN];
    let (head, rest) = aad.split_at_mut(AAD_PREFIX.len());
    head.copy_from_slice(prefix);
    let (key, rest) = rest.split_at_mut(32);
    key.copy_from_slice(&store_key.0);
    rest[..8].copy_from_slice(&binding.version.to_be_bytes());
    rest[8..16].copy_from_slice(&binding.lifespan.unix_millis().to_be_bytes());
    rest[16] = binding.flags();
    aad
}

fn aad_v1(store_key: &StoreKey) -> [u8; AAD_PREFIX_V1.len() + 32] {
    let mut aad = [0u8; AAD_PREFIX_V1.len() + 32];
    aad[..AAD_PREFIX_V1.len()].copy_from_slice(AAD_PREFIX_V1);
    aad[AAD_PREFIX_V1.len()..].copy_from_slice(&store_key.0);
    aad
}

#[cfg(test)]
mod tests;
