//! How records and index entries are kept in Redis values, and script replies
//! read back.
//!
//! A record's value, format 3 (written by default): the marker byte `3`, then the
//! version, the lifespan deadline, the last activity and the idle deadline (8
//! bytes each, big-endian), the id of the write that stored it (16 random bytes: a
//! write sent twice recognises itself by it), then the sealed data. Everything a
//! read needs is in the value, so a read is one plain `GET`.
//!
//! Format 2 (written when [`RedisSettings::value_format`] says 2, for a rolling
//! upgrade from a release that reads no format 3) has no idle deadline: the key's
//! `PEXPIRETIME` stands for it, so its read takes the `LOAD` script. Format 1 (read
//! only, written before the marker existed) has neither marker nor write id; its
//! first byte, the top byte of a version, is always 0. A value starting with the
//! byte 255 is a tombstone: what a compare-and-delete leaves for a minute, so that
//! its own second run is recognised (see `DELETE_VERSION`). Any other first byte is
//! refused as corrupt, never guessed at.
//!
//! An index entry, format 2: `2;created,expires,indexed,remember` in decimal.
//! Format 1 has no `2;`. The entries of a user are the fields of one hash (see
//! [`RedisStore`](super::RedisStore) for what each operation on it costs).
//!
//! [`RedisSettings::value_format`]: crate::store::RedisSettings::value_format

use bytes::Bytes;
use redis::Value;

use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::record::{Deadlines, Record, StoreKey};
use crate::store::{IndexEntry, IndexSample};

/// The marker of a record value in format 2.
pub(super) const RECORD_V2: u8 = 2;
/// The marker of a record value in format 3.
pub(super) const RECORD_V3: u8 = 3;
/// The first byte of a tombstone.
pub(super) const TOMBSTONE: u8 = 255;
/// The prefix of an index entry in format 2.
const ENTRY_V2: &str = "2;";
/// Version, lifespan deadline and last activity: the fields of every format.
const FIELDS_LEN: usize = 24;
/// The idle deadline of format 3.
const IDLE_LEN: usize = 8;
/// The write id of format 2.
const WRITE_ID_LEN: usize = 16;

/// A record's value in `format` (2 or 3), stored by the write `write_id`.
pub(super) fn encode(record: &Record, write_id: &[u8; WRITE_ID_LEN], format: u8) -> Vec<u8> {
    let v3 = format == RECORD_V3;
    let idle_len = if v3 { IDLE_LEN } else { 0 };
    let mut out = Vec::with_capacity(1 + FIELDS_LEN + idle_len + WRITE_ID_LEN + record.data.len());
    out.push(if v3 { RECORD_V3 } else { RECORD_V2 });
    out.extend_from_slice(&record.version.to_be_bytes());
    out.extend_from_slice(&record.deadlines.lifespan.unix_millis().to_be_bytes());
    out.extend_from_slice(&record.deadlines.active.unix_millis().to_be_bytes());
    if v3 {
        out.extend_from_slice(&record.deadlines.idle.unix_millis().to_be_bytes());
    }
    out.extend_from_slice(write_id);
    out.extend_from_slice(&record.data);
    out
}

/// A tombstone for the compare-and-delete `operation`.
pub(super) fn tombstone(operation: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(TOMBSTONE);
    out.extend_from_slice(operation);
    out
}

/// What a value holds: the record's fields, and the idle deadline when the
/// format keeps it.
struct Parsed {
    version: u64,
    lifespan: Timestamp,
    active: Timestamp,
    idle: Option<Timestamp>,
    data: Bytes,
}

impl Parsed {
    fn record(self, idle: Timestamp) -> Record {
        let deadlines = Deadlines {
            idle: idle.min(self.lifespan),
            lifespan: self.lifespan,
            active: self.active,
        };
        Record::new(self.version, deadlines, self.data)
    }
}

/// A value's fields; `None` for a tombstone.
fn parse(value: Value) -> Result<Option<Parsed>, StoreError> {
    let bytes = match value {
        Value::BulkString(bytes) => Bytes::from(bytes),
        Value::Nil => return Ok(None),
        other => {
            return Err(StoreError::Corrupt(format!(
                "a session value is not a string: {other:?}"
            )));
        }
    };
    let (offset, idle_len, write_id) = match bytes.first() {
        Some(&RECORD_V3) => (1, IDLE_LEN, WRITE_ID_LEN),
        Some(&RECORD_V2) => (1, 0, WRITE_ID_LEN),
        Some(0) => (0, 0, 0),
        Some(&TOMBSTONE) => return Ok(None),
        _ => {
            return Err(StoreError::Corrupt(
                "a session value starts with an unknown format marker".into(),
            ));
        }
    };
    let data_at = offset + FIELDS_LEN + idle_len + write_id;
    if bytes.len() < data_at {
        return Err(StoreError::Corrupt(
            "a session value is shorter than its header".into(),
        ));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[offset + at..offset + at + 8]);
        u64::from_be_bytes(b)
    };
    Ok(Some(Parsed {
        version: u64_at(0),
        lifespan: Timestamp::from_unix_millis(u64_at(8)),
        active: Timestamp::from_unix_millis(u64_at(16)),
        idle: (idle_len > 0).then(|| Timestamp::from_unix_millis(u64_at(FIELDS_LEN))),
        data: bytes.slice(data_at..),
    }))
}

/// What a plain `GET` read.
#[derive(Debug, PartialEq)]
pub(super) enum Got {
    /// A record, whole.
    Record(Record),
    /// No record (no key, or a tombstone).
    Missing,
    /// A value in a format without the idle deadline: read it again with the
    /// `LOAD` script, which also returns the key's expiry.
    NeedsExpiry,
}

/// A `GET` reply.
pub(super) fn decode_get(value: Value) -> Result<Got, StoreError> {
    Ok(match parse(value)? {
        None => Got::Missing,
        Some(parsed) => match parsed.idle {
            Some(idle) => Got::Record(parsed.record(idle)),
            None => Got::NeedsExpiry,
        },
    })
}

/// A value and its `PEXPIRETIME` (-1: no expiry) as a record; `None` for a
/// tombstone. A format 3 value's own idle deadline wins over the expiry.
pub(super) fn decode(value: Value, expire_time: &Value) -> Result<Option<Record>, StoreError> {
    let Some(parsed) = parse(value)? else {
        return Ok(None);
    };
    let idle = match (parsed.idle, expire_time) {
        (Some(idle), _) => idle,
        (None, Value::Int(ms)) if *ms >= 0 => Timestamp::from_unix_millis(*ms as u64),
        (None, Value::Int(-1)) => Timestamp::NEVER,
        // -2: the key went away between the two reads.
        (None, Value::Int(-2) | Value::Nil) => return Ok(None),
        _ => {
            return Err(StoreError::Corrupt(
                "a session key has no readable expiry".into(),
            ));
        }
    };
    Ok(Some(parsed.record(idle)))
}

/// A script's reply: nil (no record) or `{value, expiry}`.
pub(super) fn decode_reply(reply: Value) -> Result<Option<Record>, StoreError> {
    match reply {
        Value::Nil => Ok(None),
        Value::Array(mut parts) if parts.len() == 2 => {
            let expire_time = parts.pop().unwrap_or(Value::Nil);
            let value = parts.pop().unwrap_or(Value::Nil);
            decode(value, &expire_time)
        }
        other => Err(StoreError::Corrupt(format!(
            "unexpected reply from the session script: {other:?}"
        ))),
    }
}

/// An index entry, in format 2.
pub(super) fn encode_entry(entry: &IndexEntry) -> String {
    format!(
        "{ENTRY_V2}{},{},{},{}",
        entry.created_at.unix_millis(),
        entry.expires_at.unix_millis(),
        entry.indexed_at.unix_millis(),
        u8::from(entry.remember_me)
    )
}

/// The index script's reply: store keys and their entries, alternating.
pub(super) fn decode_index(reply: Value) -> Result<Vec<IndexEntry>, StoreError> {
    let corrupt = || StoreError::Corrupt("a user index entry is malformed".into());
    let parts = match reply {
        Value::Array(parts) => parts,
        Value::Nil => Vec::new(),
        other => {
            return Err(StoreError::Corrupt(format!(
                "unexpected reply from the index script: {other:?}"
            )));
        }
    };
    let mut entries = Vec::with_capacity(parts.len() / 2);
    let mut parts = parts.into_iter();
    while let (Some(field), Some(value)) = (parts.next(), parts.next()) {
        let (Value::BulkString(key), Value::BulkString(text)) = (field, value) else {
            return Err(corrupt());
        };
        let key: [u8; 32] = key.as_slice().try_into().map_err(|_| corrupt())?;
        let text = std::str::from_utf8(&text).map_err(|_| corrupt())?;
        let text = text.strip_prefix(ENTRY_V2).unwrap_or(text);
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

/// The sample script's reply: the index's length, then its entries as
/// [`decode_index`] reads them.
pub(super) fn decode_sample(reply: Value) -> Result<IndexSample, StoreError> {
    let unexpected = |other: &Value| {
        StoreError::Corrupt(format!(
            "unexpected reply from the index sample script: {other:?}"
        ))
    };
    let Value::Array(mut parts) = reply else {
        return Err(unexpected(&reply));
    };
    let (Some(entries), Some(len), None) = (parts.pop(), parts.pop(), parts.pop()) else {
        return Err(unexpected(&Value::Array(parts)));
    };
    let Value::Int(len) = len else {
        return Err(unexpected(&len));
    };
    let entries = decode_index(entries)?;
    let whole = usize::try_from(len).is_ok_and(|len| len <= entries.len());
    Ok(IndexSample::new(entries, whole))
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

    fn bulk(bytes: Vec<u8>) -> Value {
        Value::BulkString(bytes)
    }

    #[test]
    fn format_3_values_carry_the_idle_deadline_and_read_with_one_get() {
        let encoded = encode(&record(), &[5; 16], RECORD_V3);
        assert_eq!(encoded[0], RECORD_V3, "written with the format marker");
        assert_eq!(encoded.len(), 1 + FIELDS_LEN + IDLE_LEN + WRITE_ID_LEN + 6);
        assert_eq!(
            &encoded[25..33],
            &1_000u64.to_be_bytes(),
            "idle after activity"
        );
        assert_eq!(&encoded[33..49], &[5; 16], "then the write id");
        assert_eq!(
            decode_get(bulk(encoded.clone())).unwrap(),
            Got::Record(record())
        );
        assert_eq!(
            decode(bulk(encoded), &Value::Int(9_999)).unwrap(),
            Some(record()),
            "the value's idle deadline wins over the key's expiry"
        );
        let mut never = record();
        never.deadlines.idle = Timestamp::NEVER;
        let encoded = encode(&never, &[5; 16], RECORD_V3);
        let Got::Record(read) = decode_get(bulk(encoded)).unwrap() else {
            panic!("a record")
        };
        assert_eq!(read.deadlines.idle, read.deadlines.lifespan, "capped");
    }

    #[test]
    fn format_2_values_round_trip_with_the_expiry_as_idle_deadline() {
        let encoded = encode(&record(), &[5; 16], RECORD_V2);
        assert_eq!(encoded[0], RECORD_V2, "written with the format marker");
        assert_eq!(encoded.len(), 1 + FIELDS_LEN + WRITE_ID_LEN + 6);
        assert_eq!(
            decode_get(bulk(encoded.clone())).unwrap(),
            Got::NeedsExpiry,
            "a GET alone cannot read it"
        );
        let decoded = decode(bulk(encoded.clone()), &Value::Int(1_000)).unwrap();
        assert_eq!(decoded, Some(record()));
        let never = decode(bulk(encoded), &Value::Int(-1)).unwrap().unwrap();
        assert_eq!(
            never.deadlines.idle, never.deadlines.lifespan,
            "capped at the lifespan"
        );
    }

    /// A value as format 1 wrote it (no marker): it must still read, as it is what
    /// a running deployment holds when it upgrades.
    #[test]
    fn a_format_1_value_still_reads() {
        let mut v1 = Vec::new();
        v1.extend_from_slice(&7u64.to_be_bytes());
        v1.extend_from_slice(&5_000u64.to_be_bytes());
        v1.extend_from_slice(&400u64.to_be_bytes());
        v1.extend_from_slice(b"sealed");
        assert_eq!(decode_get(bulk(v1.clone())).unwrap(), Got::NeedsExpiry);
        assert_eq!(
            decode(bulk(v1), &Value::Int(1_000)).unwrap(),
            Some(record())
        );
        let entry = "1,5000,400,1";
        let reply = Value::Array(vec![bulk(vec![9; 32]), bulk(entry.as_bytes().to_vec())]);
        let decoded = decode_index(reply).unwrap();
        assert_eq!(decoded[0].expires_at, Timestamp::from_unix_millis(5_000));
        assert!(decoded[0].remember_me);
    }

    #[test]
    fn a_tombstone_reads_as_no_record() {
        assert_eq!(
            decode(bulk(tombstone(&[3; 16])), &Value::Int(1_000)).unwrap(),
            None
        );
        assert_eq!(decode_get(bulk(tombstone(&[3; 16]))).unwrap(), Got::Missing);
        assert_eq!(decode_get(Value::Nil).unwrap(), Got::Missing);
    }

    #[test]
    fn index_entries_round_trip_in_format_2() {
        let entry = IndexEntry::new(
            StoreKey::from_bytes([4; 32]),
            Timestamp::from_unix_millis(1),
            Timestamp::from_unix_millis(2),
            Timestamp::from_unix_millis(3),
            false,
        );
        let text = encode_entry(&entry);
        assert!(text.starts_with("2;"), "{text}");
        let reply = Value::Array(vec![bulk(vec![4; 32]), bulk(text.into_bytes())]);
        assert_eq!(decode_index(reply).unwrap(), vec![entry]);
    }

    #[test]
    fn a_sample_is_whole_when_the_index_holds_no_more_than_it() {
        let entry = |n: u8| {
            let text = format!("2;1,{n}000,1,0");
            [bulk(vec![n; 32]), bulk(text.into_bytes())]
        };
        let two = Value::Array(entry(1).into_iter().chain(entry(2)).collect());
        let sample = decode_sample(Value::Array(vec![Value::Int(2), two.clone()])).unwrap();
        assert!(sample.whole);
        assert_eq!(sample.entries.len(), 2);
        assert_eq!(
            sample.entries[1].expires_at,
            Timestamp::from_unix_millis(2_000)
        );
        let part = decode_sample(Value::Array(vec![Value::Int(3), two])).unwrap();
        assert!(!part.whole, "a third entry was left out");
        let empty = decode_sample(Value::Array(vec![Value::Int(0), Value::Array(vec![])]));
        assert!(empty.unwrap().whole);
    }

    #[test]
    fn garbage_replies_are_errors_not_panics() {
        assert!(decode(bulk(b"short".to_vec()), &Value::Int(1)).is_err());
        assert!(
            decode(bulk(vec![7; 40]), &Value::Int(1)).is_err(),
            "unknown marker"
        );
        assert!(decode(Value::Int(5), &Value::Int(1)).is_err());
        assert!(
            decode(
                bulk(encode(&record(), &[0; 16], RECORD_V2)),
                &Value::Int(-3)
            )
            .is_err()
        );
        let v3 = encode(&record(), &[0; 16], RECORD_V3);
        assert!(
            decode_get(bulk(v3[..48].to_vec())).is_err(),
            "cut in the write id"
        );
        assert!(decode_get(Value::Int(5)).is_err());
        assert!(decode_reply(Value::Int(3)).is_err());
        assert!(decode_reply(Value::Array(vec![Value::Nil])).is_err());
        assert_eq!(decode_reply(Value::Nil).unwrap(), None);
        let bad = Value::Array(vec![bulk(vec![1; 31]), bulk(b"1,2,3,0".to_vec())]);
        assert!(decode_index(bad).is_err());
        let bad = Value::Array(vec![bulk(vec![1; 32]), bulk(b"2;1,2".to_vec())]);
        assert!(decode_index(bad).is_err());
        assert!(decode_sample(Value::Nil).is_err());
        assert!(decode_sample(Value::Array(vec![Value::Int(1)])).is_err());
        let three = vec![Value::Int(1), Value::Array(vec![]), Value::Nil];
        assert!(decode_sample(Value::Array(three)).is_err());
        let text = Value::Array(vec![bulk(b"1".to_vec()), Value::Array(vec![])]);
        assert!(decode_sample(text).is_err());
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
