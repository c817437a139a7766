//! How records and index entries are encoded in Redis values, and script replies
//! decoded.

use bytes::Bytes;
use fred::types::Value;

use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::record::{Deadlines, Record, StoreKey};
use crate::store::IndexEntry;

/// The value's header: version, lifespan deadline and last activity, 8 bytes each.
const HEADER_LEN: usize = 24;

pub(super) fn encode(record: &Record) -> Bytes {
    let mut out = Vec::with_capacity(HEADER_LEN + record.data.len());
    out.extend_from_slice(&record.version.to_be_bytes());
    out.extend_from_slice(&record.deadlines.lifespan.unix_millis().to_be_bytes());
    out.extend_from_slice(&record.deadlines.active.unix_millis().to_be_bytes());
    out.extend_from_slice(&record.data);
    Bytes::from(out)
}

/// Decodes a value and its `PEXPIRETIME` (-1: no expiry) into a record.
fn decode(value: Value, expire_time: Value) -> Result<Record, StoreError> {
    let bytes = value
        .into_bytes()
        .filter(|b| b.len() >= HEADER_LEN)
        .ok_or_else(|| StoreError::Corrupt("a session value is shorter than its header".into()))?;
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let version = u64_at(0);
    let lifespan = Timestamp::from_unix_millis(u64_at(8));
    let active = Timestamp::from_unix_millis(u64_at(16));
    let idle = match expire_time.as_i64() {
        Some(ms) if ms >= 0 => Timestamp::from_unix_millis(ms as u64),
        Some(-1) => Timestamp::NEVER,
        _ => {
            return Err(StoreError::Corrupt(
                "a session key has no readable expiry".into(),
            ));
        }
    };
    Ok(Record::new(
        version,
        Deadlines {
            idle: idle.min(lifespan),
            lifespan,
            active,
        },
        bytes.slice(HEADER_LEN..),
    ))
}

pub(super) fn encode_entry(entry: &IndexEntry) -> String {
    format!(
        "{},{},{},{}",
        entry.created_at.unix_millis(),
        entry.expires_at.unix_millis(),
        entry.indexed_at.unix_millis(),
        u8::from(entry.remember_me)
    )
}

/// Decodes the index script's reply: store keys and their entries, alternating.
pub(super) fn decode_index(reply: Value) -> Result<Vec<IndexEntry>, StoreError> {
    let corrupt = || StoreError::Corrupt("a user index entry is malformed".into());
    let parts = match reply {
        Value::Array(parts) => parts,
        Value::Null => Vec::new(),
        other => {
            return Err(StoreError::Corrupt(format!(
                "unexpected reply from the index script: {other:?}"
            )));
        }
    };
    let mut entries = Vec::with_capacity(parts.len() / 2);
    let mut parts = parts.into_iter();
    while let (Some(field), Some(value)) = (parts.next(), parts.next()) {
        let key: [u8; 32] = field
            .into_bytes()
            .and_then(|b| <[u8; 32]>::try_from(b.as_ref()).ok())
            .ok_or_else(corrupt)?;
        let text = value.into_string().ok_or_else(corrupt)?;
        let mut fields = text.split(',').map(str::parse::<u64>);
        let mut next = || fields.next().and_then(Result::ok).ok_or_else(corrupt);
        let (created, expires, indexed, remember) = (next()?, next()?, next()?, next()?);
        entries.push(IndexEntry::new(
            StoreKey::from_bytes(key),
            Timestamp::from_unix_millis(created),
            Timestamp::from_unix_millis(expires),
            Timestamp::from_unix_millis(indexed),
            remember == 1,
        ));
    }
    Ok(entries)
}

/// A script's reply: nil (no record) or `{value, expiry}`.
pub(super) fn decode_reply(reply: Value) -> Result<Option<Record>, StoreError> {
    match reply {
        Value::Null => Ok(None),
        Value::Array(mut parts) if parts.len() == 2 => {
            let expire_time = parts.pop().unwrap_or(Value::Null);
            let value = parts.pop().unwrap_or(Value::Null);
            decode(value, expire_time).map(Some)
        }
        other => Err(StoreError::Corrupt(format!(
            "unexpected reply from the session script: {other:?}"
        ))),
    }
}

/// The `PXAT` for a record, or `None` when it never expires.
pub(super) fn expire_at(deadlines: &Deadlines) -> Option<i64> {
    let at = deadlines.expires_at();
    (!at.is_never()).then(|| i64::try_from(at.unix_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let deadlines = Deadlines {
            idle: Timestamp::from_unix_millis(1_000),
            lifespan: Timestamp::from_unix_millis(5_000),
            active: Timestamp::from_unix_millis(400),
        };
        Record::new(7, deadlines, Bytes::from_static(b"sealed"))
    }

    #[test]
    fn values_round_trip_with_the_expiry_as_idle_deadline() {
        let encoded = encode(&record());
        assert_eq!(encoded.len(), HEADER_LEN + 6);
        let decoded = decode(Value::Bytes(encoded), Value::Integer(1_000)).unwrap();
        assert_eq!(decoded, record());
        let never = decode(Value::Bytes(encode(&record())), Value::Integer(-1)).unwrap();
        assert_eq!(
            never.deadlines.idle, never.deadlines.lifespan,
            "capped at the lifespan"
        );
    }

    #[test]
    fn garbage_replies_are_errors_not_panics() {
        assert!(
            decode(
                Value::Bytes(Bytes::from_static(b"short")),
                Value::Integer(1)
            )
            .is_err()
        );
        assert!(decode(Value::Integer(5), Value::Integer(1)).is_err());
        assert!(decode(Value::Bytes(encode(&record())), Value::Integer(-2)).is_err());
        assert!(decode_reply(Value::Integer(3)).is_err());
        assert!(decode_reply(Value::Array(vec![Value::Null])).is_err());
        assert_eq!(decode_reply(Value::Null).unwrap(), None);
    }

    #[test]
    fn expiry_is_the_earlier_deadline_and_never_means_none() {
        assert_eq!(expire_at(&record().deadlines), Some(1_000));
        let never = Deadlines {
            idle: Timestamp::NEVER,
            lifespan: Timestamp::NEVER,
            active: Timestamp::from_unix_millis(0),
        };
        assert_eq!(expire_at(&never), None);
    }
}
