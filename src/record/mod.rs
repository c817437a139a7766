//! The server-side half of a session: the [`Record`], its [`StoreKey`], and the sealing
//! of session data.
//!
//! A record is stored under `HMAC-SHA256(store-id key, session id)`, never under the
//! session id itself, so a dump of the store yields nothing that can be replayed as a
//! cookie. Its data is sealed with AES-256-GCM under a per-session key,
//! `HMAC-SHA256(record key, record secret)`, where the record secret travels only in
//! the cookie: the store plus the server key still cannot read a session without its
//! cookie. The store key is part of the associated data, so a record moved to another
//! key no longer opens.
//!
//! Sealed data, format v2: version byte `2`, a flags byte (bit 0: remember-me),
//! 12-byte random nonce, ciphertext and tag of the JSON object that maps keys to
//! values. The associated data binds, besides the store key, what the store keeps
//! beside the sealed bytes and the layer trusts: the record's version and lifespan,
//! and the flags. So the record, not the cookie, says whether the session is
//! remembered and when it ends, and a store writer can neither change those nor
//! pair sealed data with another version. Format v1 (version byte `1`, no flags,
//! only the store key bound) still opens; every write seals v2.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Deref, DerefMut};

use aes_gcm::aead::AeadInPlace;
use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aes::Aes256Enc;
use aes_gcm::aes::cipher::{BlockCipher, BlockClosure, BlockEncrypt, BlockSizeUser};
use aes_gcm::{AesGcm, KeyInit, Nonce, Tag};

use bytes::Bytes;
use hmac::Mac;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

use crate::clock::Timestamp;
use crate::keys::KeySet;

const VERSION: u8 = 2;
const V1: u8 = 1;
/// Version and flags.
const HEADER_LEN: usize = 2;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const AAD_PREFIX_V1: &[u8] = b"tower-sealed-sessions record v1";
const AAD_PREFIX: &[u8] = b"tower-sealed-sessions record v2";
/// The AAD of format v2: prefix, store key, version, lifespan, flags.
const AAD_LEN: usize = AAD_PREFIX.len() + 32 + 8 + 8 + 1;
const REMEMBER_ME: u8 = 1;
/// Session data up to this size is decrypted on the stack, larger data on the heap.
const STACK_PLAINTEXT: usize = 512;

/// Session data in the clear: what handlers read and write. Wiped when dropped:
/// every key and every string in it is overwritten with zeros (see [`wipe`]).
#[derive(Clone, Default, PartialEq, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Data(BTreeMap<String, Value>);

impl Data {
    pub(crate) fn new() -> Self {
        Data(BTreeMap::new())
    }

    /// Removes every key handlers wrote, wiping the values; the layer's own
    /// (reserved) keys stay.
    pub(crate) fn retain_reserved(&mut self) {
        self.0.retain(|key, value| {
            let kept = is_reserved(key);
            if !kept {
                wipe(value);
            }
            kept
        });
    }
}

impl Deref for Data {
    type Target = BTreeMap<String, Value>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Data {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<const N: usize> From<[(String, Value); N]> for Data {
    fn from(entries: [(String, Value); N]) -> Self {
        Data(BTreeMap::from(entries))
    }
}

impl FromIterator<(String, Value)> for Data {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(entries: I) -> Self {
        Data(entries.into_iter().collect())
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        for (mut key, mut value) in std::mem::take(&mut self.0) {
            key.zeroize();
            wipe(&mut value);
        }
    }
}

/// Overwrites the text `value` holds (strings, object keys, at any depth) with
/// zeros before it is freed. Numbers and booleans are stored inline, where safe
/// code cannot reach them once the value is dropped: they are not wiped.
pub(crate) fn wipe(value: &mut Value) {
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => {
            for (mut key, mut item) in std::mem::take(map) {
                key.zeroize();
                wipe(&mut item);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Where the user id is kept in the session data: a key no handler can write, since
/// [`Session::insert`](crate::Session::insert) refuses keys starting with NUL.
pub(crate) const USER_KEY: &str = "\u{0}user";

/// Whether `key` belongs to the layer rather than to handlers.
#[inline]
pub(crate) fn is_reserved(key: &str) -> bool {
    key.starts_with('\u{0}')
}

/// The user id a session's data ties it to.
#[inline]
pub(crate) fn user_of(data: &Data) -> Option<&str> {
    data.get(USER_KEY).and_then(|v| v.as_str())
}

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

/// The AEAD for one session's data: AES-256-GCM, as [`Aes256Gcm`](crate::keys::Aes256Gcm).
pub(crate) struct DataCipher(AesGcm<BoxedAes256, U12>);

/// AES-256 with its key schedule behind a pointer. The schedule takes about 1 KB
/// (its type has room for the software fallback's layout), and `AesGcm` moves its
/// cipher a few times while setting up, then the cipher travels from the load
/// through the session to the write: moving a pointer is cheaper.
struct BoxedAes256(Box<Aes256Enc>);

impl BlockSizeUser for BoxedAes256 {
    type BlockSize = U16;
}

impl BlockCipher for BoxedAes256 {}

impl BlockEncrypt for BoxedAes256 {
    fn encrypt_with_backend(&self, f: impl BlockClosure<BlockSize = U16>) {
        self.0.encrypt_with_backend(f);
    }
}

impl DataCipher {
    pub(crate) fn new(keys: &KeySet, record_secret: &[u8; 32]) -> Self {
        let key = keys.record.clone().chain_update(record_secret).finalize();
        let key = Zeroizing::new(<[u8; 32]>::from(key.into_bytes()));
        let aes = Aes256Enc::new_from_slice(key.as_ref()).expect("32-byte key");
        DataCipher(AesGcm::from(BoxedAes256(Box::new(aes))))
    }

    /// Seals `data` as the record of `store_key` with what `binding` says.
    pub(crate) fn seal(&self, store_key: &StoreKey, binding: Binding, data: &Data) -> Bytes {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        // Measured first, so that the record is allocated once at its exact size
        // and the JSON is written straight into it: no regrowth leaves a freed copy
        // of the plaintext behind, and no spare capacity stays with the record.
        let mut counter = Counter(0);
        serde_json::to_writer(&mut counter, data).expect("a map of JSON values always serializes");
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + counter.0 + TAG_LEN);
        out.extend_from_slice(&[VERSION, binding.flags()]);
        out.extend_from_slice(&nonce);
        serde_json::to_writer(&mut out, data).expect("a map of JSON values always serializes");
        self.seal_tail(store_key, binding, out, nonce)
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
        let aad = aad(store_key, binding);
        let tag = self
            .0
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                &aad,
                &mut out[HEADER_LEN + NONCE_LEN..],
            )
            .expect("AES-GCM encrypts any message shorter than 64 GiB");
        out.extend_from_slice(&tag);
        debug_assert_eq!(
            out.len(),
            out.capacity(),
            "a record is allocated at its size"
        );
        Bytes::from(out)
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
        out.extend_from_slice(&[VERSION, binding.flags()]);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(msg);
        self.seal_tail(store_key, binding, out, nonce)
    }

    /// Opens the data of `record`, stored under `store_key`.
    pub(crate) fn open(
        &self,
        store_key: &StoreKey,
        record: &Record,
    ) -> Result<OpenedRecord, RecordError> {
        let sealed = &record.data[..];
        let (&version, rest) = sealed.split_first().ok_or(RecordError::Truncated)?;
        let (remember_me, rest, aad) = match version {
            VERSION => {
                let (&flags, rest) = rest.split_first().ok_or(RecordError::Truncated)?;
                if flags & !REMEMBER_ME != 0 {
                    return Err(RecordError::Tampered);
                }
                let binding = Binding {
                    version: record.version,
                    lifespan: record.deadlines.lifespan,
                    remember_me: flags == REMEMBER_ME,
                };
                (
                    Some(binding.remember_me),
                    rest,
                    Aad::V2(aad(store_key, binding)),
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
        // Decrypted in place, on the stack when it fits, and wiped afterwards.
        let mut stack = [0u8; STACK_PLAINTEXT];
        let mut heap;
        let plaintext: &mut [u8] = match stack.get_mut(..msg.len()) {
            Some(buf) => {
                buf.copy_from_slice(msg);
                buf
            }
            None => {
                heap = msg.to_vec();
                &mut heap
            }
        };
        let opened = self
            .0
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                aad,
                plaintext,
                Tag::from_slice(tag),
            )
            .map_err(|_| RecordError::Tampered)
            .and_then(|()| serde_json::from_slice(plaintext).map_err(|_| RecordError::Malformed));
        plaintext.zeroize();
        opened.map(|data| OpenedRecord { data, remember_me })
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

fn aad(store_key: &StoreKey, binding: Binding) -> [u8; AAD_LEN] {
    let mut aad = [0u8; AAD_LEN];
    let (prefix, rest) = aad.split_at_mut(AAD_PREFIX.len());
    prefix.copy_from_slice(AAD_PREFIX);
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
