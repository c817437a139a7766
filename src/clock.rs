//! Wall-clock time for expiry decisions, with a manual clock for tests.
//!
//! Every deadline in this crate is a [`Timestamp`]: milliseconds since the Unix epoch,
//! the unit Redis expiry (`PXAT`) uses. The layer and the stores read the time from a
//! [`Clock`], which is the system clock unless a [`ManualClock`] is plugged in, so
//! tests can move time forward by hours without sleeping.
//!
//! ```
//! use std::time::Duration;
//! use tower_sealed_sessions::{Clock, ManualClock};
//!
//! let hand = ManualClock::new();
//! let clock = Clock::from(hand.clone());
//! let before = clock.now();
//! hand.advance(Duration::from_secs(90));
//! assert_eq!(clock.now().unix_millis() - before.unix_millis(), 90_000);
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, in milliseconds since the Unix epoch.
///
/// [`Timestamp::NEVER`] stands for "no deadline" (for example no lifespan configured).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// A deadline that never comes.
    pub const NEVER: Timestamp = Timestamp(u64::MAX);

    /// A timestamp from milliseconds since the Unix epoch.
    pub const fn from_unix_millis(millis: u64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> u64 {
        self.0
    }

    /// Whether this is [`Timestamp::NEVER`].
    pub const fn is_never(self) -> bool {
        self.0 == u64::MAX
    }

    /// This timestamp moved `by` into the future, saturating at [`Timestamp::NEVER`].
    pub fn saturating_add(self, by: Duration) -> Self {
        let millis = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// How long from `earlier` to `self`; zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// The same instant as a [`SystemTime`], or `None` for [`Timestamp::NEVER`].
    pub fn to_system_time(self) -> Option<SystemTime> {
        if self.is_never() {
            None
        } else {
            UNIX_EPOCH.checked_add(Duration::from_millis(self.0))
        }
    }
}

impl From<SystemTime> for Timestamp {
    /// Times before the epoch map to the epoch.
    fn from(time: SystemTime) -> Self {
        let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_never() {
            f.write_str("Timestamp(never)")
        } else {
            write!(f, "Timestamp({}ms)", self.0)
        }
    }
}

/// The source of the current time: the system clock, or a [`ManualClock`].
///
/// Cheap to clone; clones of a manual clock share its hand.
#[derive(Clone, Default)]
pub struct Clock {
    manual: Option<ManualClock>,
}

impl Clock {
    /// The system's wall clock (the default).
    pub fn system() -> Self {
        Clock { manual: None }
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        match &self.manual {
            None => Timestamp::from(SystemTime::now()),
            Some(hand) => Timestamp(hand.millis.load(Ordering::Relaxed)),
        }
    }
}

impl From<ManualClock> for Clock {
    fn from(hand: ManualClock) -> Self {
        Clock { manual: Some(hand) }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.manual {
            None => f.write_str("Clock(system)"),
            Some(hand) => write!(f, "Clock(manual at {:?})", hand.now()),
        }
    }
}

/// A clock that only moves when told to; for tests of expiry.
///
/// Clones share the same hand: advance one and every [`Clock`] made from it moves.
#[derive(Clone, Debug)]
pub struct ManualClock {
    millis: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock set to the current system time.
    pub fn new() -> Self {
        Self::at(Timestamp::from(SystemTime::now()))
    }

    /// A manual clock set to `at`.
    pub fn at(at: Timestamp) -> Self {
        ManualClock {
            millis: Arc::new(AtomicU64::new(at.unix_millis())),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let millis = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .millis
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                Some(m.saturating_add(millis))
            });
    }

    /// The time the clock shows.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::Relaxed))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let hand = ManualClock::at(Timestamp::from_unix_millis(1_000));
        let a = Clock::from(hand.clone());
        let b = a.clone();
        assert_eq!(a.now(), Timestamp::from_unix_millis(1_000));
        hand.advance(Duration::from_millis(250));
        assert_eq!(b.now(), Timestamp::from_unix_millis(1_250));
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        let t = Timestamp::from_unix_millis(u64::MAX - 5);
        assert_eq!(t.saturating_add(Duration::from_secs(1)), Timestamp::NEVER);
        assert!(Timestamp::NEVER.to_system_time().is_none());
        let early = Timestamp::from_unix_millis(10);
        assert_eq!(early.saturating_since(t), Duration::ZERO);
        assert_eq!(
            t.saturating_since(early),
            Duration::from_millis(u64::MAX - 15)
        );
    }

    #[test]
    fn system_clock_is_close_to_system_time() {
        let now = Timestamp::from(SystemTime::now());
        let clock = Clock::system().now();
        assert!(clock.saturating_since(now) < Duration::from_secs(5));
    }
}
