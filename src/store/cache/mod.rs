//! The record cache: records as a store returned them, kept in the process so a
//! hot session is read without a round trip, and kept coherent by the store's
//! invalidation stream (Redis client tracking, PostgreSQL notifications).
//!
//! # What it holds
//!
//! A record exactly as the store holds it: version, deadlines and the sealed
//! bytes, under its store key; never opened data, a cookie or a session id. Its
//! bytes are wiped when an entry is dropped, so a heap dump yields no more than
//! a dump of the store. Bounded by `max_entries` (least recently used first out)
//! and by `ttl` (an entry older is not served).
//!
//! # Why it stays right
//!
//! - **An invalidation drops the entry.** The store's stream reports every key
//!   another writer changes; the cache keeps nothing it cannot tell is current.
//! - **No fill over a newer change.** Every fill (what a read returned, or what
//!   a write of this process made) carries a [`Ticket`] taken before the store
//!   was asked: the key's invalidation count at that moment. When an
//!   invalidation of the key arrived in between, the fill is dropped, since what
//!   the store returned may already be older than that change. Keys share these
//!   counts in stripes, so a change of another key may drop a fill too (a miss,
//!   never a stale hit).
//! - **A lost stream empties it.** While the stream is down (a lost
//!   connection, a silent one that no longer answers its heartbeat) the cache
//!   is empty and every read goes to the store; a fill whose ticket was taken
//!   before the loss is dropped. Changes made while it was down are unknown, so
//!   it starts empty again once the stream is back.
//! - **The process's own writes** update the entry: the stream does not report
//!   them (Redis `NOLOOP`, a writer tag on PostgreSQL), so a read after a write
//!   in the same process is a hit.

mod settings;
pub use settings::CacheSettings;

#[cfg(any(feature = "redis", feature = "postgres"))]
mod records;
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) use records::{Front, RecordCache};
