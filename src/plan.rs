//! What a request must persist once its handler has answered: the [`Decision`]
//! taken from its session's state, and the [`Plan`] of store work it may hold.

use http::HeaderValue;
use std::mem;

use crate::clock::Timestamp;
use crate::cookie::Meta;
use crate::open::Loaded;
use crate::record::{Data, Deadlines, StoreKey};
use crate::session::{Changes, Session, State};
use crate::settings::Settings;
use crate::store::UserTag;

/// What happens to the client's token (the cookie, or the header in header mode).
pub(crate) enum TokenChange {
    Keep,
    /// A new token, rendered for its carrier.
    Set(HeaderValue),
    Clear,
}

/// What a request's session comes to.
// Made and taken apart once per request, on the stack: boxing the plan would cost
// an allocation on every write.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Decision {
    /// No store work: the token is kept or cleared as it says.
    Done(TokenChange),
    /// Store work, after which the store work itself says what the token becomes.
    Persist(Plan),
}

/// A request's edits to a session it loaded: what an update or a move writes.
pub(crate) struct Edit {
    pub(crate) loaded: Loaded,
    pub(crate) changes: Changes,
    pub(crate) meta: Meta,
    pub(crate) lifespan_changed: bool,
    /// The request is no activity of the session's (a device-binding request
    /// that proved nothing): the stored deadlines stay as they are.
    pub(crate) quiet: bool,
}

/// Store work for one request.
pub(crate) enum Plan {
    /// Unchanged, but the idle deadline lags by more than the touch interval.
    Touch {
        store_key: StoreKey,
        deadlines: Deadlines,
        version: u64,
    },
    /// Changed data or lifespan: compare-and-set on the loaded record, writing
    /// `data` (the loaded data with the edit applied).
    Update { edit: Edit, data: Data },
    /// A new id for the same session (a privilege change, or a cookie sealed under
    /// a previous key): the data is re-read from the store when it moves.
    Move(Edit),
    /// Destroyed: delete the record, then either clear the token or, when data was
    /// written after the destroy, start a brand-new session with it.
    Destroy {
        store_key: StoreKey,
        /// The index the session leaves.
        user: Option<UserTag>,
        then_create: Option<(Data, Meta)>,
    },
    /// A new session with data in it.
    Create { data: Data, meta: Meta },
    /// Destroyed in an ambiguous request: every session it named ends.
    DestroyAll { store_keys: Vec<StoreKey> },
}

impl Decision {
    /// Takes the session's state, once the inner service has answered with a
    /// response to save, and decides what the store must do.
    pub(crate) fn take(session: &Session) -> Decision {
        session.finish(decide)
    }

    /// For a response that is a server error, after which nothing is saved: only a
    /// refused token is still cleared, which costs no store I/O and loses nothing.
    pub(crate) fn after_error(session: &Session) -> Decision {
        session.finish(|state, _, _| {
            Decision::Done(if state.refused {
                TokenChange::Clear
            } else {
                TokenChange::Keep
            })
        })
    }
}

/// The decision table. Its rows, in order:
///
/// | the request | decision |
/// | --- | --- |
/// | opened nothing, holds no data | keep the token; clear a refused one, or a withheld one the handler destroyed |
/// | ambiguous, not destroyed | keep: nothing is saved |
/// | ambiguous, destroyed | delete every session opened, clear (keep when too many tokens to open any) |
/// | opened nothing, holds data | create |
/// | destroyed | delete, then create when data was written after |
/// | cycled, or (not quiet) its cookie sealed under a previous key | move to a new id |
/// | changed data or lifespan | update |
/// | unchanged, not quiet, stored idle deadline or last activity lagging | touch |
/// | unchanged | keep |
fn decide(state: &mut State, settings: &Settings, now: Timestamp) -> Decision {
    if state.loaded.is_none() && state.ambiguous.is_none() && state.data.is_empty() {
        // Nothing was opened and nothing is to be kept: the common request
        // without a cookie, decided without taking anything apart.
        // A withheld request (a bound session without its bound cookie) keeps
        // its token too, unless the handler logged out.
        return Decision::Done(if state.refused || (state.withheld && state.destroyed) {
            TokenChange::Clear
        } else {
            TokenChange::Keep
        });
    }
    let data = mem::take(&mut state.data);
    let changes = mem::take(&mut state.changes);
    let meta = state.meta;
    if let Some(store_keys) = state.ambiguous.take() {
        if !state.destroyed || store_keys.is_empty() {
            if !changes.is_empty() || state.cycle || state.lifespan_changed {
                tracing::warn!(target: "tower_sealed_sessions", "changes to a session of an ambiguous request (several session cookies) are not saved");
            }
            return Decision::Done(TokenChange::Keep);
        }
        return Decision::Persist(Plan::DestroyAll { store_keys });
    }
    let Some(loaded) = state.loaded.take() else {
        // Empty data without a loaded record was decided above.
        return Decision::Persist(Plan::Create { data, meta });
    };
    let lifespan_changed = state.lifespan_changed;
    // A quiet request (a device-binding request that proved nothing) is no
    // activity of the session's, whatever else it asks: it neither slides nor
    // touches the session, nor moves it to a new id under the primary key (that
    // move sets a new cookie and ends the old one, so a thief holding a cookie
    // sealed under a previous key could take the session over).
    let active = !state.quiet;
    let plan = if state.destroyed {
        Plan::Destroy {
            store_key: loaded.store_key,
            user: loaded.user_tag(settings),
            then_create: (!data.is_empty()).then_some((data, meta)),
        }
    } else if state.cycle || (active && loaded.key_index != 0) {
        Plan::Move(Edit {
            loaded,
            changes,
            meta,
            lifespan_changed,
            quiet: !active,
        })
    } else if !changes.is_empty() || lifespan_changed {
        let edit = Edit {
            loaded,
            changes,
            meta,
            lifespan_changed,
            quiet: !active,
        };
        Plan::Update { edit, data }
    } else if !active {
        // No activity of the session's: nothing to touch.
        return Decision::Done(TokenChange::Keep);
    } else {
        let deadlines = settings.deadlines(now, meta).slide(loaded.deadlines);
        let interval = settings.effective_touch_interval();
        let lag = deadlines.idle.saturating_since(loaded.deadlines.idle);
        // A user's session list shows the last activity: keep it current to the
        // touch interval, remember-me sessions (never idle) included.
        let quiet = now.saturating_since(loaded.deadlines.active);
        if lag <= interval && (loaded.user.is_none() || quiet <= interval) {
            return Decision::Done(TokenChange::Keep);
        }
        Plan::Touch {
            store_key: loaded.store_key,
            deadlines,
            version: loaded.version,
        }
    };
    Decision::Persist(plan)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::cookie::CookieData;
    use crate::keys::Keys;
    use crate::open::{Brought, Start};
    use crate::record::DataCipher;

    const MINUTE: Duration = Duration::from_secs(60);

    fn settings() -> Arc<Settings> {
        Arc::new(Settings::new(Keys::generate()))
    }

    fn now() -> Timestamp {
        Timestamp::from_unix_millis(1_700_000_000_000)
    }

    /// A session record loaded at `now`, its deadlines written `age` earlier.
    fn loaded(settings: &Settings, age: Duration, user: Option<&str>) -> Loaded {
        let written = Timestamp::from_unix_millis(now().unix_millis() - age.as_millis() as u64);
        let meta = settings.new_meta(written);
        let cookie = CookieData::generate(meta.created_at, meta.lifespan_deadline, false);
        let keys = settings.keys.primary();
        Loaded {
            store_key: StoreKey::derive(keys, &cookie.sid),
            cipher: DataCipher::new(&cookie.record_secret),
            cookie,
            key_index: 0,
            version: 3,
            deadlines: settings.deadlines(written, meta),
            user: user.map(str::to_owned),
        }
    }

    /// The session of a request that brought `brought`.
    fn session(settings: &Arc<Settings>, brought: Brought) -> Session {
        Session::started(settings.clone(), now(), Start::Fresh(brought))
    }

    /// The session of a request that loaded a live record with `user`, `age` old.
    fn live(settings: &Arc<Settings>, age: Duration, user: Option<&str>) -> Session {
        let mut data = Data::new();
        if let Some(user) = user {
            data.insert(crate::record::USER_KEY.into(), user.into());
        }
        Session::started(
            settings.clone(),
            now(),
            Start::Opened(loaded(settings, age, user), data),
        )
    }

    fn kind(decision: &Decision) -> &'static str {
        match decision {
            Decision::Done(TokenChange::Keep) => "keep",
            Decision::Done(TokenChange::Clear) => "clear",
            Decision::Done(TokenChange::Set(_)) => "set",
            Decision::Persist(Plan::Touch { .. }) => "touch",
            Decision::Persist(Plan::Update { .. }) => "update",
            Decision::Persist(Plan::Move(_)) => "move",
            Decision::Persist(Plan::Destroy { .. }) => "destroy",
            Decision::Persist(Plan::Create { .. }) => "create",
            Decision::Persist(Plan::DestroyAll { .. }) => "destroy all",
        }
    }

    fn decided(session: &Session) -> &'static str {
        kind(&Decision::take(session))
    }

    #[test]
    fn a_request_that_opened_nothing_keeps_or_clears_its_token() {
        let s = settings();
        assert_eq!(decided(&session(&s, Brought::Nothing)), "keep");
        assert_eq!(decided(&session(&s, Brought::Refused)), "clear");
        let touched = session(&s, Brought::Nothing);
        touched.insert("k", 1).unwrap();
        touched.remove("k");
        assert_eq!(decided(&touched), "keep", "nothing left to keep");
    }

    #[test]
    fn a_new_session_is_created_only_with_data() {
        let s = settings();
        let new = session(&s, Brought::Refused);
        new.insert("k", 1).unwrap();
        match Decision::take(&new) {
            Decision::Persist(Plan::Create { data, .. }) => assert_eq!(data.len(), 1),
            other => panic!("expected create, got {}", kind(&other)),
        }
    }

    #[test]
    fn a_session_says_whether_it_is_new_or_empty_and_shows_keys_not_values() {
        let s = settings();
        let fresh = session(&s, Brought::Nothing);
        assert!(fresh.is_new() && fresh.is_empty());
        let opened = live(&s, Duration::ZERO, Some("ada"));
        assert!(!opened.is_new());
        assert!(opened.is_empty(), "the user id is the layer's, not data");
        opened.insert("cart", "three apples").unwrap();
        assert!(!opened.is_empty());
        let shown = format!("{opened:?}");
        assert_eq!(
            shown,
            "Session { keys: [\"cart\"], loaded: true, new: false, remember_me: false, user: true, .. }"
        );
        assert!(!shown.contains("apples") && !shown.contains("ada"));
        opened.destroy();
        assert!(opened.is_new(), "a destroyed session starts again");
    }

    #[test]
    fn writing_the_value_already_there_saves_nothing() {
        let s = settings();
        let data = Data::from([("k".to_owned(), "v".into())]);
        let same = Session::started(
            s.clone(),
            now(),
            Start::Opened(loaded(&s, Duration::ZERO, None), data),
        );
        same.insert("k", "v").unwrap();
        assert_eq!(decided(&same), "keep");
    }

    #[test]
    fn changes_in_an_ambiguous_request_are_dropped_with_a_warning_and_nothing_else_is() {
        let s = settings();
        let keys = vec![StoreKey::from_bytes([1; 32]), StoreKey::from_bytes([2; 32])];
        let warned = |change: &dyn Fn(&Session)| {
            crate::testing::logs_of(|| {
                let session = session(&s, Brought::Ambiguous(keys.clone()));
                change(&session);
                assert_eq!(decided(&session), "keep");
            })
            .contains("are not saved")
        };
        assert!(!warned(&|_| {}), "nothing to drop, nothing said");
        assert!(warned(&|s| s.insert("k", 1).unwrap()));
        assert!(warned(&|s| s.cycle_id()));
        assert!(warned(&|s| s.set_remember_me(true)));
    }

    #[test]
    fn an_ambiguous_request_saves_nothing_unless_it_destroys() {
        let s = settings();
        let keys = vec![StoreKey::from_bytes([1; 32]), StoreKey::from_bytes([2; 32])];
        let written = session(&s, Brought::Ambiguous(keys.clone()));
        written.insert("k", 1).unwrap();
        written.cycle_id();
        written.set_remember_me(true);
        assert_eq!(decided(&written), "keep");
        let destroyed = session(&s, Brought::Ambiguous(keys.clone()));
        destroyed.destroy();
        match Decision::take(&destroyed) {
            Decision::Persist(Plan::DestroyAll { store_keys }) => assert_eq!(store_keys, keys),
            other => panic!("expected destroy all, got {}", kind(&other)),
        }
        // A cookie bomb opened nothing: it saves nothing, ends nothing, clears nothing.
        let bomb = session(&s, Brought::Ambiguous(Vec::new()));
        assert!(bomb.is_ambiguous());
        bomb.insert("k", 1).unwrap();
        assert_eq!(decided(&bomb), "keep");
        let bomb = session(&s, Brought::Ambiguous(Vec::new()));
        bomb.destroy();
        assert_eq!(decided(&bomb), "keep");
    }

    #[test]
    fn destroy_wins_over_every_other_change() {
        let s = settings();
        let ended = live(&s, Duration::ZERO, Some("ada"));
        ended.insert("k", 1).unwrap();
        ended.cycle_id();
        ended.destroy();
        match Decision::take(&ended) {
            Decision::Persist(Plan::Destroy {
                user, then_create, ..
            }) => {
                assert!(user.is_some(), "the session leaves its user's index");
                assert!(
                    then_create.is_none(),
                    "data written before the destroy goes"
                );
            }
            other => panic!("expected destroy, got {}", kind(&other)),
        }
        let restarted = live(&s, Duration::ZERO, None);
        restarted.destroy();
        restarted.insert("k", 1).unwrap();
        match Decision::take(&restarted) {
            Decision::Persist(Plan::Destroy { then_create, .. }) => {
                assert!(
                    then_create.is_some(),
                    "data written after a destroy starts anew"
                )
            }
            other => panic!("expected destroy, got {}", kind(&other)),
        }
    }

    #[test]
    fn a_cycle_or_an_old_key_moves_the_session() {
        let s = settings();
        let cycled = live(&s, Duration::ZERO, None);
        cycled.cycle_id();
        assert_eq!(decided(&cycled), "move");
        let mut old_key = loaded(&s, Duration::ZERO, None);
        old_key.key_index = 1;
        let rotated = Session::started(s.clone(), now(), Start::Opened(old_key, Data::new()));
        assert_eq!(decided(&rotated), "move", "re-sealed under the primary key");
        // A quiet request is no activity: no move, no new cookie; what it
        // writes stays under the key it came with.
        let quiet = || {
            let mut old_key = loaded(&s, Duration::ZERO, None);
            old_key.key_index = 1;
            let session = Session::started(s.clone(), now(), Start::Opened(old_key, Data::new()));
            session.finish(|state, _, _| state.quiet = true);
            session
        };
        assert_eq!(decided(&quiet()), "keep");
        let written = quiet();
        written.insert("k", 1).unwrap();
        match Decision::take(&written) {
            Decision::Persist(Plan::Update { edit, .. }) => assert!(edit.quiet),
            other => panic!("expected update, got {}", kind(&other)),
        }
    }

    #[test]
    fn changed_data_or_lifespan_updates_and_carries_the_edit() {
        let s = settings();
        let changed = live(&s, Duration::ZERO, None);
        changed.insert("k", "v").unwrap();
        match Decision::take(&changed) {
            Decision::Persist(Plan::Update { edit, data }) => {
                assert!(!edit.lifespan_changed);
                assert!(!edit.changes.is_empty());
                assert_eq!(data.get("k"), Some(&"v".into()));
            }
            other => panic!("expected update, got {}", kind(&other)),
        }
        let extended = live(&s, Duration::ZERO, None);
        extended.set_remember_me(true);
        match Decision::take(&extended) {
            Decision::Persist(Plan::Update { edit, .. }) => {
                assert!(edit.lifespan_changed && edit.meta.remember_me);
            }
            other => panic!("expected update, got {}", kind(&other)),
        }
        let rewritten = live(&s, Duration::ZERO, None);
        rewritten.insert("k", "v").unwrap();
        assert_eq!(decided(&rewritten), "update");
    }

    #[test]
    fn an_update_runs_now_and_again_on_the_value_a_concurrent_request_stored() {
        let s = settings();
        let incr = |n: Option<u64>| Some(n.unwrap_or(0) + 1);
        let counted = live(&s, Duration::ZERO, None);
        assert_eq!(counted.update("n", incr).unwrap(), Some(1));
        assert_eq!(counted.update("n", incr).unwrap(), Some(2));
        assert_eq!(counted.get::<u64>("n").unwrap(), Some(2), "read at once");
        assert_eq!(counted.update("gone", |_: Option<u64>| None).unwrap(), None);
        match Decision::take(&counted) {
            Decision::Persist(Plan::Update { edit, data }) => {
                assert_eq!(data.get("n"), Some(&2.into()));
                // Another request stored 40 meanwhile: both increments run on it.
                let mut theirs = Data::from([("n".to_owned(), 40.into())]);
                edit.changes.apply(&mut theirs).unwrap();
                assert_eq!(theirs.get("n"), Some(&42.into()));
                // A value it cannot read stands.
                let mut odd = Data::from([("n".to_owned(), "many".into())]);
                edit.changes.apply(&mut odd).unwrap();
                assert_eq!(odd.get("n"), Some(&"many".into()));
            }
            other => panic!("expected update, got {}", kind(&other)),
        }

        // After an insert or a removal in the same request, the result stands.
        let set_first = live(&s, Duration::ZERO, None);
        set_first.insert("n", 10).unwrap();
        assert_eq!(set_first.update("n", incr).unwrap(), Some(11));
        match Decision::take(&set_first) {
            Decision::Persist(Plan::Update { edit, .. }) => {
                let mut theirs = Data::from([("n".to_owned(), 40.into())]);
                edit.changes.apply(&mut theirs).unwrap();
                assert_eq!(theirs.get("n"), Some(&11.into()));
            }
            other => panic!("expected update, got {}", kind(&other)),
        }

        // An update that changes nothing saves nothing; bad input changes nothing.
        let same = live(&s, Duration::ZERO, None);
        assert_eq!(same.update("absent", |n: Option<u64>| n).unwrap(), None);
        assert!(same.update("\u{0}user", incr).is_err(), "reserved");
        same.insert("word", "w").unwrap();
        let wrong_type = same.update("word", incr);
        assert!(matches!(
            wrong_type,
            Err(crate::SessionError::Deserialize { .. })
        ));
        assert_eq!(same.get::<String>("word").unwrap().as_deref(), Some("w"));
        let unchanged = live(&s, Duration::ZERO, None);
        unchanged.update("absent", |n: Option<u64>| n).unwrap();
        assert_eq!(decided(&unchanged), "keep");
    }

    #[test]
    fn an_unchanged_session_is_touched_only_when_its_deadline_lags() {
        let s = settings();
        let interval = s.effective_touch_interval();
        assert_eq!(
            decided(&live(&s, interval, None)),
            "keep",
            "lags by exactly the interval"
        );
        match Decision::take(&live(&s, interval + MINUTE, None)) {
            Decision::Persist(Plan::Touch {
                deadlines, version, ..
            }) => {
                assert_eq!(version, 3, "a touch keeps the version");
                assert_eq!(deadlines.active, now());
            }
            other => panic!("expected touch, got {}", kind(&other)),
        }
    }

    #[test]
    fn a_logged_in_session_keeps_its_last_activity_current() {
        let mut s = Settings::new(Keys::generate());
        s.idle_timeout = None;
        let s = Arc::new(s);
        let quiet = s.effective_touch_interval() + MINUTE;
        assert_eq!(
            decided(&live(&s, quiet, None)),
            "keep",
            "no idle deadline to slide, no user list to show it"
        );
        assert_eq!(decided(&live(&s, quiet, Some("ada"))), "touch");
    }

    #[test]
    fn after_an_error_only_a_refused_token_is_cleared() {
        let s = settings();
        let refused = session(&s, Brought::Refused);
        refused.insert("k", 1).unwrap();
        assert_eq!(kind(&Decision::after_error(&refused)), "clear");
        let fresh = session(&s, Brought::Nothing);
        fresh.insert("k", 1).unwrap();
        assert_eq!(kind(&Decision::after_error(&fresh)), "keep");
        let changed = live(&s, Duration::ZERO, None);
        changed.insert("k", 1).unwrap();
        assert_eq!(kind(&Decision::after_error(&changed)), "keep");
    }
}
