//! Session data in the clear, parsed only as far as handlers need it.
//!
//! A record opens into its JSON text, kept in the session (one allocation, however
//! many keys and strings the data holds). [`Data::lookup`] reads one key straight
//! from the text: a read-only request never builds the map. The map is built the
//! first time anything else needs it (a write, a list of keys), and from then on
//! it is the data. Both the text and the map are wiped when dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserializer, Serialize, Serializer};
use serde_json::Value;
use zeroize::Zeroize;

/// A record's JSON text, as opened (wiped when dropped); empty for fresh data
/// and for data changed since it was opened.
#[derive(Default)]
pub(crate) struct Text(Vec<u8>);

impl Text {
    pub(crate) fn new(bytes: Vec<u8>) -> Self {
        Text(bytes)
    }
}

impl std::ops::Deref for Text {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Text {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for Text {
    fn drop(&mut self) {
        wipe_bytes(&mut self.0);
    }
}

/// Zeroes `bytes`, its spare capacity too, when it has an allocation. One
/// without (empty, never grown) is passed over: zeroize would still clear its
/// spare capacity, a zero-length `memset` at a dangling address, which on a CPU
/// with AVX-512 is a masked store that the CPU completes with a microcode assist
/// (perf put 5 % of a read and write on the memory store there).
pub(crate) fn wipe_bytes(bytes: &mut Vec<u8>) {
    if bytes.capacity() != 0 {
        bytes.zeroize();
    }
}

/// [`wipe_bytes`] for a string.
fn wipe_text(text: &mut String) {
    if text.capacity() != 0 {
        text.zeroize();
    }
}

/// Session data in the clear: what handlers read and write. Wiped when dropped:
/// the text, and every key and every string of the map (see [`wipe`]).
pub(crate) struct Data {
    /// The JSON object as the record held it; empty once the map was changed.
    text: Text,
    /// The map, parsed from `text` when first needed.
    map: OnceLock<BTreeMap<String, Value>>,
    /// The length of the text the data was opened from (0 for fresh data): what
    /// its JSON probably measures once changed, to size the record written.
    opened_len: usize,
}

impl Data {
    /// No data. Nothing is built until a key is written.
    pub(crate) fn new() -> Self {
        Data {
            text: Text::default(),
            map: OnceLock::new(),
            opened_len: 0,
        }
    }

    fn from_map(map: BTreeMap<String, Value>) -> Self {
        Data {
            text: Text::default(),
            map: OnceLock::from(map),
            opened_len: 0,
        }
    }

    /// The data of a record whose plaintext is `text`, and the user it names;
    /// `None` when `text` is not one JSON object. Checked here, in the one pass
    /// that finds the user and builds nothing, so that a malformed record is
    /// refused when it is opened.
    pub(crate) fn from_text(text: Text) -> Option<(Self, Option<String>)> {
        let mut de = serde_json::Deserializer::from_slice(&text);
        let user = de
            .deserialize_map(Find::<String> {
                key: USER_KEY,
                value: PhantomData,
            })
            .ok()?;
        de.end().ok()?;
        let data = Data {
            opened_len: text.len(),
            text,
            map: OnceLock::new(),
        };
        Some((data, user))
    }

    /// The value under `key` as a `T`, read from the map if it was built, else
    /// straight from the text (nothing is built).
    pub(crate) fn lookup<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Option<Result<T, serde_json::Error>> {
        if let Some(map) = self.map.get() {
            return map.get(key).map(T::deserialize);
        }
        if self.text.is_empty() {
            return None;
        }
        let mut de = serde_json::Deserializer::from_slice(&self.text);
        match de.deserialize_map(Find::<T> {
            key,
            value: PhantomData,
        }) {
            Ok(found) => found.map(Ok),
            Err(err) => Some(Err(err)),
        }
    }

    /// The JSON text as opened, while the data is unchanged.
    pub(crate) fn unchanged_text(&self) -> Option<&[u8]> {
        (!self.text.is_empty()).then_some(&self.text[..])
    }

    /// About how long the data's JSON is: exactly, while it is unchanged.
    pub(crate) fn size_hint(&self) -> usize {
        self.opened_len.max(self.text.len())
    }

    /// Whether the map was built (a test of the lazy path).
    #[cfg(test)]
    pub(crate) fn is_parsed(&self) -> bool {
        self.map.get().is_some()
    }

    fn parsed(&self) -> &BTreeMap<String, Value> {
        // The text was checked to be one JSON object when the data was made; should
        // it still not parse (a lone surrogate escape, which only a writer other
        // than this crate's could have sealed), the data reads as empty.
        self.map.get_or_init(|| match self.text.is_empty() {
            true => BTreeMap::new(),
            false => serde_json::from_slice(&self.text).unwrap_or_default(),
        })
    }

    /// Removes every key handlers wrote, wiping the values; the layer's own
    /// (reserved) keys stay.
    pub(crate) fn retain_reserved(&mut self) {
        self.retain(|key, value| {
            let kept = is_reserved(key);
            if !kept {
                wipe(value);
            }
            kept
        });
    }
}

impl Default for Data {
    fn default() -> Self {
        Data::new()
    }
}

impl Deref for Data {
    type Target = BTreeMap<String, Value>;

    fn deref(&self) -> &Self::Target {
        self.parsed()
    }
}

/// Changing the data builds the map and wipes the text, which no longer says
/// what the data is.
impl DerefMut for Data {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.parsed();
        self.text = Text::default();
        self.map.get_mut().expect("parsed above")
    }
}

impl Clone for Data {
    fn clone(&self) -> Self {
        Data::from_map(self.parsed().clone())
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Self) -> bool {
        self.parsed() == other.parsed()
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.parsed().fmt(f)
    }
}

impl Serialize for Data {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.parsed().serialize(serializer)
    }
}

impl<const N: usize> From<[(String, Value); N]> for Data {
    fn from(entries: [(String, Value); N]) -> Self {
        Data::from_map(BTreeMap::from(entries))
    }
}

impl FromIterator<(String, Value)> for Data {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(entries: I) -> Self {
        Data::from_map(entries.into_iter().collect())
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        if let Some(map) = self.map.get_mut() {
            for (mut key, mut value) in std::mem::take(map) {
                wipe_text(&mut key);
                wipe(&mut value);
            }
        }
    }
}

/// Overwrites the text `value` holds (strings, object keys, at any depth) with
/// zeros before it is freed. Numbers and booleans are stored inline, where safe
/// code cannot reach them once the value is dropped: they are not wiped.
pub(crate) fn wipe(value: &mut Value) {
    match value {
        Value::String(text) => wipe_text(text),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => {
            for (mut key, mut item) in std::mem::take(map) {
                wipe_text(&mut key);
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

/// The user id a session's data ties it to (from the map: for writes, which
/// built it).
#[inline]
pub(crate) fn user_of(data: &Data) -> Option<&str> {
    data.get(USER_KEY).and_then(|v| v.as_str())
}

/// The user id a session's data ties it to, read without building the map.
pub(crate) fn user_in(data: &Data) -> Option<String> {
    data.lookup::<String>(USER_KEY).and_then(Result::ok)
}

/// The value under one key of a JSON object, as a `T`; the last one when the key
/// repeats, as in the map.
struct Find<'k, T> {
    key: &'k str,
    value: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> Visitor<'de> for Find<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut found = None;
        while let Some(matches) = map.next_key_seed(KeyIs(self.key))? {
            if matches {
                found = Some(map.next_value::<T>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Whether a map key is the one looked for, compared where it lies (no copy).
struct KeyIs<'k>(&'k str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}
