//! Following Sentinel failovers: what a sentinel's announcements say about this
//! store's master, and the hold on writes from the first stage of its failover
//! until the sentinels announce the new master.
//!
//! Why hold: in a `SENTINEL FAILOVER` the leading sentinel sends the chosen
//! replica `REPLICAOF NO ONE`, waits for it to report itself master, repoints the
//! other replicas at it, and only then publishes `+switch-master`. The old master
//! is neither paused nor demoted meanwhile (Sentinel does not use `FAILOVER` or
//! `CLIENT PAUSE`): it acknowledges every write it gets, and the promoted replica
//! never sees those written after it stopped replicating (measured: 1,291 of
//! 2,210 acknowledged writes lost with two replicas before writes were held). A
//! replica not yet repointed still follows the old master, so even `WAIT` counts
//! it. Once the old master is demoted, it drops them all. The sentinel announces each stage as it
//! enters it, and its state machine advances at most one stage per tick (about
//! 100 ms), so a store that stops writing at the first announcement sends nothing
//! the old master will lose.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::StoreError;

/// The channels a store subscribes to on every sentinel: the stages of a
/// failover, its end, and its abandonment.
pub(super) const CHANNELS: &[&str] = &[
    "+try-failover",
    "+elected-leader",
    "+failover-state-select-slave",
    "+selected-slave",
    "+failover-state-send-slaveof-noone",
    "+failover-state-wait-promotion",
    "+promoted-slave",
    "+failover-state-reconf-slaves",
    "+slave-reconf-sent",
    "+slave-reconf-inprog",
    "+slave-reconf-done",
    "+switch-master",
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
];

/// What an announcement means for writes to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Announcement {
    /// A failover of the master is under way: hold writes.
    Begun,
    /// A new master is in place: write to it.
    Switched,
    /// This sentinel gave up its failover: the old master stays.
    Aborted,
}

/// What `payload`, published on `channel`, says about the master named `name`;
/// `None` when it is about another master, or unknown.
///
/// Payloads name an instance as `master <name> <ip> <port>`, or as
/// `<type> <name> <ip> <port> @ <master name> <ip> <port>` for a replica or a
/// sentinel; `+switch-master` is `<name> <old ip> <old port> <new ip> <new port>`.
pub(super) fn announcement(channel: &str, payload: &str, name: &str) -> Option<Announcement> {
    let master = match (channel, payload.split_once(" @ ")) {
        ("+switch-master", _) => payload.split(' ').next(),
        (_, Some((_, of))) => of.split(' ').next(),
        (_, None) => payload.strip_prefix("master ")?.split(' ').next(),
    };
    if master != Some(name) {
        return None;
    }
    match channel {
        "+switch-master" => Some(Announcement::Switched),
        c if c.starts_with("-failover-abort-") => Some(Announcement::Aborted),
        c if CHANNELS.contains(&c) => Some(Announcement::Begun),
        _ => None,
    }
}

/// After this long without an end or an abort, a hold is lifted all the same:
/// Sentinel's default `failover-timeout`, by which a failover has ended or been
/// abandoned.
const STALE: Duration = Duration::from_secs(180);

/// The hold on writes to a master while sentinels fail it over.
pub(super) struct WriteHold {
    state: watch::Sender<Held>,
    /// How long one write waits for the hold to end.
    patience: Duration,
}

/// The sentinels (by index) whose failover of the master is under way, and since
/// when writes are held.
#[derive(Debug, Default)]
struct Held {
    by: BTreeSet<usize>,
    since: Option<Instant>,
}

impl WriteHold {
    pub(super) fn new(patience: Duration) -> Self {
        WriteHold {
            state: watch::Sender::new(Held::default()),
            patience,
        }
    }

    /// Sentinel `sentinel` announced a stage of a failover of the master.
    pub(super) fn begin(&self, sentinel: usize) {
        self.state.send_if_modified(|held| {
            let first = held.since.is_none();
            if first {
                held.since = Some(Instant::now());
                tracing::warn!(target: "tower_sealed_sessions", "a Sentinel failover of the Redis master has begun: writes are held until the new master is announced");
            }
            held.by.insert(sentinel) && first
        });
    }

    /// Sentinel `sentinel`'s failover ended (abandoned, or its announcements
    /// lost), or, with `None`, a new master is in place.
    pub(super) fn end(&self, sentinel: Option<usize>) {
        self.state.send_if_modified(|held| {
            match sentinel {
                Some(sentinel) => {
                    held.by.remove(&sentinel);
                }
                None => held.by.clear(),
            }
            match (held.by.is_empty(), held.since) {
                (true, Some(since)) => {
                    held.since = None;
                    tracing::info!(target: "tower_sealed_sessions", held = ?since.elapsed(), "writes to the Redis master resume");
                    true
                }
                _ => false,
            }
        });
    }

    /// Whether sentinel `sentinel` holds writes.
    pub(super) fn holds(&self, sentinel: usize) -> bool {
        self.state.borrow().by.contains(&sentinel)
    }

    /// Waits until writes may go to the master: at once unless a failover is
    /// under way, else until it ends, for at most the patience.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the failover outlasts the patience: the
    /// write was not sent (the old master would have acknowledged it, then lost
    /// it).
    pub(super) async fn writable(&self) -> Result<(), StoreError> {
        let mut state = self.state.subscribe();
        let since = match state.borrow_and_update().since {
            None => return Ok(()),
            Some(since) => since,
        };
        if since.elapsed() > STALE {
            tracing::warn!(target: "tower_sealed_sessions", "a Sentinel failover announced {STALE:?} ago neither ended nor was abandoned: writes go to the master again");
            self.end(None);
            return Ok(());
        }
        let open = state.wait_for(|held| held.since.is_none());
        match tokio::time::timeout(self.patience, open).await {
            Ok(_) => Ok(()),
            Err(_) => Err(StoreError::backend(format!(
                "a Sentinel failover of the Redis master is under way: the write waited {:?} \
                 for the new master (store.failover_hold) and was not sent",
                self.patience
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_are_read_for_this_master_only() {
        use Announcement::*;
        let m = "mymaster";
        let of = |c: &str, p: &str| announcement(c, p, m);
        assert_eq!(
            of("+try-failover", "master mymaster 127.0.0.1 6379"),
            Some(Begun)
        );
        assert_eq!(of("+try-failover", "master other 127.0.0.1 6379"), None);
        assert_eq!(of("+try-failover", "master mymasterx 127.0.0.1 6379"), None);
        assert_eq!(
            of(
                "+selected-slave",
                "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 6379"
            ),
            Some(Begun)
        );
        assert_eq!(
            of(
                "+promoted-slave",
                "slave 127.0.0.1:6380 127.0.0.1 6380 @ other 127.0.0.1 6379"
            ),
            None
        );
        assert_eq!(
            of("+switch-master", "mymaster 127.0.0.1 6379 127.0.0.1 6380"),
            Some(Switched)
        );
        assert_eq!(
            of("+switch-master", "other 127.0.0.1 6379 127.0.0.1 6380"),
            None
        );
        assert_eq!(
            of(
                "-failover-abort-no-good-slave",
                "master mymaster 127.0.0.1 6379"
            ),
            Some(Aborted)
        );
        assert_eq!(of("+sdown", "master mymaster 127.0.0.1 6379"), None);
        assert_eq!(of("+try-failover", ""), None, "nothing to read");
        assert_eq!(of("+switch-master", ""), None);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_wait_from_the_first_stage_until_every_sentinel_is_done() {
        let hold = std::sync::Arc::new(WriteHold::new(Duration::from_secs(2)));
        hold.writable().await.expect("no failover: at once");
        hold.begin(0);
        hold.begin(1);
        assert!(hold.holds(0) && hold.holds(1));
        let waiting = tokio::spawn({
            let hold = hold.clone();
            async move { hold.writable().await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        hold.end(Some(1));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "sentinel 0's failover goes on");
        hold.end(None);
        waiting.await.unwrap().expect("the new master is in place");
        assert!(!hold.holds(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_held_past_the_patience_fails_unsent() {
        let hold = WriteHold::new(Duration::from_secs(2));
        hold.begin(0);
        let started = tokio::time::Instant::now();
        let err = hold.writable().await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(err.to_string().contains("store.failover_hold"), "{err}");
        hold.end(Some(0));
        hold.writable().await.expect("abandoned: writes go on");
    }
}
