//! [`WriteQueue`]: one write per session at a time in this process, each starting
//! from the record the write before it left.
//!
//! Without it, N concurrent writers of one session race: each compare-and-set
//! that wins makes every other one conflict and retry, so the round trips grow
//! with the square of the writers (300 writers of one session on loopback Redis:
//! 195 of them gave up at the write deadline). With it, the writers of a
//! session in this process take turns, first come first served. The one whose
//! turn it is knows the record as the previous turn left it (written, or seen in
//! a conflict), replays its request's changes on it in memory, and writes once:
//! N writers cost N compare-and-sets. Compare-and-set stays the guard against
//! other processes: a conflict with one costs a retry, as before.
//!
//! A session's queue exists while one of its writes is running or waiting, and
//! rests for [`REST`] after the last (at most [`MAX_RESTING`] sessions rest at
//! once, the oldest going first): a request that loaded the record before that
//! write landed, and writes after it, still starts from what it wrote rather than
//! conflicting with it. A turn hands the data it wrote, in the clear, only to a
//! writer already waiting; a resting queue keeps the record as sealed (what the
//! store holds too), which the late writer opens with its own cookie's secret.
//! At most [`MAX_WAITING`] writes wait in a queue; a write still gives up at the
//! write deadline, its wait for its turn included (503). Stores that are
//! [`IMMEDIATE`](crate::store::SessionStore::IMMEDIATE) write on the spot and
//! never queue.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;
use tokio::time::Instant;

use crate::error::StoreError;
use crate::record::{Data, Deadlines, Record, StoreKey};

/// The most writes of one session that may wait for their turn in one process.
/// A client that sends more at once (HTTP/2 allows 100 streams per connection by
/// default) is flooding: the writes over it are refused at once (503) rather than
/// held.
pub(crate) const MAX_WAITING: usize = 1_024;

/// How long a session's queue stays after its last write, with what that write
/// learnt: longer than a request usually takes between loading a session and
/// writing it. A writer that comes later and loaded the record before that
/// write costs one conflict and a retry, as without a queue.
pub(crate) const REST: Duration = Duration::from_secs(1);

/// The most sessions whose queues rest at once; past it the oldest goes.
pub(crate) const MAX_RESTING: usize = 1_024;

/// The sessions being written in this process, each with its turn and what the
/// last turn knew of its record.
#[derive(Default)]
pub(crate) struct WriteQueue {
    sessions: Mutex<Sessions>,
}

#[derive(Default)]
struct Sessions {
    queues: HashMap<StoreKey, Queued>,
    /// The queues that went to rest, oldest first, each with when it did (an
    /// entry whose queue has woken since, or rested again, is passed over).
    resting: VecDeque<(StoreKey, Instant)>,
}

/// One session's queue: the lock whose holder writes, how many writes hold or
/// wait for it, and since when it rests when that is none.
struct Queued {
    turn: Arc<tokio::sync::Mutex<Known>>,
    writers: usize,
    rested: Option<Instant>,
}

impl Sessions {
    /// Removes the queues that have rested for [`REST`], and the oldest past
    /// [`MAX_RESTING`].
    fn sweep(&mut self, now: Instant) {
        while let Some(&(key, since)) = self.resting.front() {
            if self.resting.len() <= MAX_RESTING && now.duration_since(since) < REST {
                break;
            }
            self.resting.pop_front();
            if let Entry::Occupied(queued) = self.queues.entry(key)
                && queued.get().rested == Some(since)
            {
                queued.remove();
            }
        }
    }
}

/// What the previous turn knew of the session's record.
#[derive(Default)]
pub(super) enum Known {
    /// Nothing: this is the first turn, or the previous one failed.
    #[default]
    Nothing,
    /// What the previous turn wrote, in the clear (the next one need not open
    /// it), and as sealed: all that stays once the queue rests.
    Written(Opened, Record),
    /// The record the previous turn lost to (written by another process).
    Record(Record),
    /// Deleted, expired or moved: a write would find nothing.
    Gone,
}

/// A record's data in the clear, with what the record says of the session.
pub(super) struct Opened {
    pub(super) data: Data,
    pub(super) version: u64,
    pub(super) deadlines: Deadlines,
    pub(super) remember_me: bool,
}

impl Known {
    fn version(&self) -> Option<u64> {
        match self {
            Known::Nothing => None,
            Known::Written(opened, _) => Some(opened.version),
            Known::Record(record) => Some(record.version),
            Known::Gone => Some(u64::MAX),
        }
    }
}

impl WriteQueue {
    /// Waits for the turn to write the session under `key`, for at most `wait`
    /// (without a tokio runtime, without a limit).
    pub(super) async fn turn(&self, key: StoreKey, wait: Duration) -> Result<Turn<'_>, StoreError> {
        let lock = {
            let mut sessions = self.sessions();
            sessions.sweep(Instant::now());
            let queued = sessions.queues.entry(key).or_insert_with(|| Queued {
                turn: Arc::default(),
                writers: 0,
                rested: None,
            });
            if queued.writers > MAX_WAITING {
                return Err(StoreError::Contended { attempts: 0 });
            }
            queued.writers += 1;
            queued.rested = None;
            queued.turn.clone()
        };
        // From here on the turn's drop leaves the queue, however this ends.
        let mut turn = Turn {
            queue: Some(self),
            key,
            held: None,
        };
        let held = if tokio::runtime::Handle::try_current().is_ok() {
            tokio::time::timeout(wait, lock.lock_owned())
                .await
                .map_err(|_| StoreError::Contended { attempts: 0 })?
        } else {
            lock.lock_owned().await
        };
        turn.held = Some(held);
        Ok(turn)
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // Nothing panics while holding it; a poisoned map is still consistent.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many sessions have a queue, resting ones included (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sessions().queues.len()
    }

    /// How many writes hold or wait for the turn of `key` (for tests).
    #[cfg(test)]
    fn writers(&self, key: &StoreKey) -> usize {
        self.sessions().queues.get(key).map_or(0, |q| q.writers)
    }
}

/// The turn to write one session: held until dropped. What the turn learns of the
/// record is left to the next.
pub(super) struct Turn<'q> {
    /// None for a write that does not queue.
    queue: Option<&'q WriteQueue>,
    key: StoreKey,
    held: Option<OwnedMutexGuard<Known>>,
}

impl Turn<'_> {
    /// The turn of a write to a store that writes on the spot, which never
    /// queues: it knows nothing and learns nothing.
    pub(super) fn unqueued(key: StoreKey) -> Self {
        Turn {
            queue: None,
            key,
            held: None,
        }
    }

    /// What the previous turn left, when it is newer than `version` (the one
    /// this request loaded), or the news that the session is gone. Taken: this
    /// turn leaves what it learns in its place.
    pub(super) fn take_newer_than(&mut self, version: u64) -> Option<Known> {
        let held = self.held.as_deref_mut()?;
        if held.version()? <= version {
            return None;
        }
        Some(std::mem::take(held))
    }

    /// Leaves what this turn learnt (or [`Known::Nothing`]) to the next one.
    pub(super) fn learn(&mut self, known: Known) {
        if let Some(held) = self.held.as_deref_mut() {
            *held = known;
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let Some(queue) = self.queue else { return };
        let mut sessions = queue.sessions();
        let mut held = self.held.take();
        // A turn that learnt nothing (or failed) leaves nothing worth a rest.
        let learnt = held
            .as_deref()
            .is_some_and(|known| !matches!(known, Known::Nothing));
        let now = Instant::now();
        let Sessions { queues, resting } = &mut *sessions;
        if let Entry::Occupied(mut queued) = queues.entry(self.key) {
            queued.get_mut().writers -= 1;
            if queued.get().writers == 0 {
                // No writer waits: the data in the clear goes (wiped), and the
                // queue rests with the record as sealed, which a late writer
                // opens like one it lost to.
                if let Some(known) = held.as_deref_mut()
                    && matches!(known, Known::Written(..))
                    && let Known::Written(_, sealed) = std::mem::take(known)
                {
                    *known = Known::Record(sealed);
                }
                if learnt {
                    queued.get_mut().rested = Some(now);
                    resting.push_back((self.key, now));
                } else {
                    queued.remove();
                }
            }
        }
        sessions.sweep(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;

    fn record(version: u64) -> Record {
        let deadlines = Deadlines {
            idle: Timestamp::NEVER,
            lifespan: Timestamp::NEVER,
            active: Timestamp::from_unix_millis(0),
        };
        Record::new(version, deadlines, "sealed".into())
    }

    const LONG: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn turns_come_in_order_and_each_sees_what_the_previous_left() {
        let queue = Arc::new(WriteQueue::default());
        let key = StoreKey::from_bytes([1; 32]);
        let mut first = queue.turn(key, LONG).await.unwrap();
        assert!(
            first.take_newer_than(0).is_none(),
            "the first turn knows nothing"
        );
        let (order, mut seen) = (Arc::new(Mutex::new(Vec::new())), Vec::new());
        for n in 0..3u64 {
            let (queue, order) = (queue.clone(), order.clone());
            seen.push(tokio::spawn(async move {
                let mut turn = queue.turn(key, LONG).await.unwrap();
                order.lock().unwrap().push(n);
                let known = match turn.take_newer_than(1) {
                    Some(Known::Record(r)) => Some(r.version),
                    _ => None,
                };
                turn.learn(Known::Record(record(n + 3)));
                known
            }));
            // Each waiter is queued before the next is spawned.
            tokio::task::yield_now().await;
        }
        first.learn(Known::Record(record(2)));
        drop(first);
        let mut known = Vec::new();
        for task in seen {
            known.push(task.await.unwrap());
        }
        assert_eq!(
            *order.lock().unwrap(),
            [0, 1, 2],
            "first come, first served"
        );
        assert_eq!(
            known,
            [Some(2), Some(3), Some(4)],
            "each turn sees the one before"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_queue_rests_with_what_it_learnt_then_goes() {
        let queue = WriteQueue::default();
        let key = StoreKey::from_bytes([6; 32]);
        let mut turn = queue.turn(key, LONG).await.unwrap();
        turn.learn(Known::Record(record(3)));
        drop(turn);
        assert_eq!(queue.len(), 1, "it rests");
        // A writer that loaded version 2 before that write landed starts from it.
        tokio::time::advance(REST / 2).await;
        let mut late = queue.turn(key, LONG).await.unwrap();
        assert!(matches!(late.take_newer_than(2), Some(Known::Record(r)) if r.version == 3));
        late.learn(Known::Record(record(4)));
        drop(late);
        tokio::time::advance(REST / 2 + Duration::from_millis(1)).await;
        // Its rest started again with the second write: not yet over.
        let other = StoreKey::from_bytes([7; 32]);
        drop(queue.turn(other, LONG).await.unwrap());
        assert_eq!(
            queue.len(),
            1,
            "the second rest is not over; the other learnt nothing"
        );
        tokio::time::advance(REST).await;
        drop(queue.turn(other, LONG).await.unwrap());
        assert_eq!(queue.len(), 0, "a rest ends at the next write after it");
    }

    #[tokio::test]
    async fn data_in_the_clear_goes_to_a_waiting_writer_and_only_the_sealed_record_rests() {
        let queue = Arc::new(WriteQueue::default());
        let key = StoreKey::from_bytes([8; 32]);
        let written = |version| {
            let data = Data::from([("k".to_string(), serde_json::json!("secret"))]);
            let deadlines = record(version).deadlines;
            Known::Written(
                Opened {
                    data,
                    version,
                    deadlines,
                    remember_me: false,
                },
                record(version),
            )
        };
        let mut first = queue.turn(key, LONG).await.unwrap();
        let waiter = tokio::spawn({
            let queue = queue.clone();
            async move {
                let mut turn = queue.turn(key, LONG).await.unwrap();
                let clear = matches!(turn.take_newer_than(1), Some(Known::Written(w, _)) if w.data.get("k").is_some());
                turn.learn(written(3));
                clear
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(queue.writers(&key), 2);
        first.learn(written(2));
        drop(first);
        assert!(
            waiter.await.unwrap(),
            "the waiting writer gets the data in the clear"
        );
        let mut late = queue.turn(key, LONG).await.unwrap();
        assert!(
            matches!(late.take_newer_than(2), Some(Known::Record(r)) if r.version == 3),
            "the rested queue kept the sealed record, not the data"
        );
    }

    #[tokio::test]
    async fn no_more_than_the_bound_of_queues_rest() {
        let queue = WriteQueue::default();
        for n in 0..MAX_RESTING + 10 {
            let mut bytes = [0; 32];
            bytes[..8].copy_from_slice(&(n as u64).to_le_bytes());
            let mut turn = queue.turn(StoreKey::from_bytes(bytes), LONG).await.unwrap();
            turn.learn(Known::Gone);
        }
        assert_eq!(queue.len(), MAX_RESTING);
        let first = StoreKey::from_bytes([0; 32]);
        assert_eq!(queue.writers(&first), 0);
        assert!(
            !queue.sessions().queues.contains_key(&first),
            "the oldest went first"
        );
    }

    #[tokio::test]
    async fn a_record_no_newer_than_the_loaded_one_is_not_offered() {
        let queue = WriteQueue::default();
        let key = StoreKey::from_bytes([2; 32]);
        let mut turn = queue.turn(key, LONG).await.unwrap();
        turn.learn(Known::Record(record(5)));
        assert!(turn.take_newer_than(5).is_none());
        assert!(turn.take_newer_than(6).is_none());
        assert!(matches!(turn.take_newer_than(4), Some(Known::Record(r)) if r.version == 5));
        assert!(turn.take_newer_than(0).is_none(), "taken");
        let written = Opened {
            data: Data::new(),
            version: 7,
            deadlines: record(7).deadlines,
            remember_me: true,
        };
        turn.learn(Known::Written(written, record(7)));
        assert!(turn.take_newer_than(7).is_none());
        assert!(matches!(turn.take_newer_than(6), Some(Known::Written(w, _)) if w.version == 7));
        turn.learn(Known::Gone);
        assert!(
            turn.take_newer_than(u64::MAX - 1).is_some(),
            "gone is newer than anything"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_waiting_past_its_deadline_gives_up_and_leaves_no_queue_behind() {
        let queue = Arc::new(WriteQueue::default());
        let key = StoreKey::from_bytes([3; 32]);
        let holder = queue.turn(key, LONG).await.unwrap();
        let late = queue.turn(key, Duration::from_millis(50)).await;
        assert!(matches!(late, Err(StoreError::Contended { attempts: 0 })));
        // A waiter dropped before its turn (its client went away) leaves too.
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.turn(key, LONG).await.map(|_| ()) }
        });
        tokio::task::yield_now().await;
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        drop(holder);
        assert_eq!(queue.len(), 0);
    }

    #[tokio::test]
    async fn a_flood_of_one_session_is_refused_past_the_bound() {
        let queue = Arc::new(WriteQueue::default());
        let key = StoreKey::from_bytes([4; 32]);
        let holder = queue.turn(key, LONG).await.unwrap();
        let waiters: Vec<_> = (0..MAX_WAITING)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.turn(key, LONG).await.map(|_| ()) })
            })
            .collect();
        // Let every waiter join the queue (bounded: each yield runs some of them).
        for _ in 0..10_000 {
            if queue.writers(&key) == 1 + MAX_WAITING {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(queue.writers(&key), 1 + MAX_WAITING);
        assert!(matches!(
            queue.turn(key, LONG).await,
            Err(StoreError::Contended { attempts: 0 })
        ));
        // Another session is not held up.
        drop(
            queue
                .turn(StoreKey::from_bytes([5; 32]), LONG)
                .await
                .unwrap(),
        );
        drop(holder);
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
        assert_eq!(queue.len(), 0);
    }
}
