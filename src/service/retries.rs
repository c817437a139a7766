//! [`Retries`]: the pace of a write's compare-and-set retries, and when it gives
//! up.

use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::settings::Settings;
use crate::store::SessionStore;

/// Compare-and-set attempts before a write is refused with 503. A conflict means
/// another write to the same session succeeded, so a write loses at most once per
/// concurrent writer: this many attempts always succeed with up to 127 writers at
/// once, more than the 100 concurrent streams HTTP/2 servers usually allow one
/// client. Measured with 100 concurrent writers: 2 to 19 attempts, heavy-tailed.
const MAX_UPDATE_ATTEMPTS: u32 = 128;
/// The first wait after a second conflict in a row; each further one doubles.
const BACKOFF_BASE: Duration = Duration::from_millis(1);
/// The longest wait between two attempts.
const BACKOFF_CAP: Duration = Duration::from_millis(50);
/// Paces the compare-and-set retries of one write: the first retry at once (one
/// concurrent writer is the common case), then random waits that double from
/// [`BACKOFF_BASE`] up to [`BACKOFF_CAP`] ("full jitter", so that writers that
/// collided do not collide again in step), until the settings' write deadline or
/// [`MAX_UPDATE_ATTEMPTS`]. An [`IMMEDIATE`](SessionStore::IMMEDIATE) store
/// resolves each attempt under its own lock, its futures are never left pending,
/// and a concurrent writer has finished by the time the conflict is seen: there
/// the retries never wait.
pub(super) struct Retries {
    started: Instant,
    deadline: Duration,
    conflicts: u32,
    wait: bool,
}

impl Retries {
    pub(super) fn new<St: SessionStore>(settings: &Settings) -> Self {
        Retries {
            started: Instant::now(),
            deadline: settings.write_deadline,
            conflicts: 0,
            wait: !St::IMMEDIATE,
        }
    }

    /// What is left of the write deadline.
    pub(super) fn left(&self) -> Duration {
        self.deadline.saturating_sub(self.started.elapsed())
    }

    /// After a lost compare-and-set: waits before the next attempt, or gives up.
    pub(super) async fn after_conflict(&mut self) -> Result<(), StoreError> {
        let Some(wait) = self.next_wait()? else {
            return Ok(());
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::time::sleep(wait).await;
        } else {
            // No tokio timer to wait on: let the other writers run.
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    /// Counts a conflict and says how long to wait before the next attempt: not at
    /// all, a random time below the backoff ceiling, or give up.
    fn next_wait(&mut self) -> Result<Option<Duration>, StoreError> {
        self.conflicts += 1;
        let spent = self.started.elapsed();
        if self.conflicts >= MAX_UPDATE_ATTEMPTS || spent >= self.deadline {
            return Err(StoreError::Contended {
                attempts: self.conflicts,
            });
        }
        if self.conflicts == 1 || !self.wait {
            return Ok(None);
        }
        let ceiling = backoff_ceiling(self.conflicts, self.deadline - spent);
        Ok(Some(ceiling.mul_f64(rand::random::<f64>())))
    }
}

/// The longest wait after `conflicts` conflicts in a row (2 or more) with `left`
/// before the deadline: [`BACKOFF_BASE`], doubling with each conflict, at most
/// [`BACKOFF_CAP`], and never past the deadline.
fn backoff_ceiling(conflicts: u32, left: Duration) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1 << conflicts.saturating_sub(2).min(16))
        .min(BACKOFF_CAP)
        .min(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_1_ms_to_50_ms_and_stops_at_the_deadline() {
        let plenty = Duration::from_secs(10);
        let ms = Duration::from_millis;
        let ceilings: Vec<Duration> = (2..10).map(|n| backoff_ceiling(n, plenty)).collect();
        assert_eq!(
            ceilings,
            [ms(1), ms(2), ms(4), ms(8), ms(16), ms(32), ms(50), ms(50)]
        );
        assert_eq!(backoff_ceiling(1_000, plenty), ms(50), "no overflow");
        assert_eq!(backoff_ceiling(9, ms(7)), ms(7), "never past the deadline");
    }

    fn retries(wait: bool, deadline: Duration, spent: Duration) -> Retries {
        Retries {
            started: Instant::now() - spent,
            deadline,
            conflicts: 0,
            wait,
        }
    }

    #[test]
    fn retries_wait_from_the_second_conflict_never_past_the_deadline() {
        let ms = Duration::from_millis;
        // 95 ms of a 100 ms deadline spent: every wait ends before the deadline.
        let mut late = retries(true, ms(100), ms(95));
        assert_eq!(late.next_wait().unwrap(), None, "the first retry at once");
        for _ in 0..20 {
            let wait = late.next_wait().unwrap().expect("then waits");
            assert!(wait <= ms(5), "{wait:?} passes the deadline");
        }
        // An immediate store never waits, and gives up after 128 attempts.
        let mut immediate = retries(false, Duration::from_secs(3600), Duration::ZERO);
        for _ in 1..MAX_UPDATE_ATTEMPTS {
            assert_eq!(immediate.next_wait().unwrap(), None);
        }
        match immediate.next_wait() {
            Err(StoreError::Contended { attempts }) => assert_eq!(attempts, MAX_UPDATE_ATTEMPTS),
            other => panic!("expected to give up: {other:?}"),
        }
        // Past the deadline: give up at the next conflict.
        let mut over = retries(true, ms(10), ms(11));
        assert!(matches!(
            over.next_wait(),
            Err(StoreError::Contended { attempts: 1 })
        ));
    }
}
