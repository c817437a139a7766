//! Device binding's part of the [`Session`] handle: offering it, editing the
//! binding kept in the session's record, and what a withheld session is.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::changes::{Change, Guard, Lost};
use super::{Session, State};
use crate::audit::audit_device;
use crate::clock::Timestamp;
use crate::device_binding::{BINDING_KEY, Entry, random_token};
use crate::record::{Data, wipe};
use crate::settings::Settings;

impl Session {
    /// Whether the layer withheld the request's session: the session is bound to
    /// a device ([`device_binding`](crate::device_binding)) and the request came
    /// without a valid bound cookie. This session is then a new, empty one, as
    /// for a request without a cookie; the bound session is neither read, saved
    /// nor cleared. Writing to this one starts a new session (a new cookie), and
    /// [`destroy`](Session::destroy) clears the cookie.
    pub fn is_withheld(&self) -> bool {
        self.read("is_withheld").withheld
    }

    /// Offers device binding ([`device_binding`](crate::device_binding)) to the
    /// browser: the response carries `Secure-Session-Registration` with a fresh
    /// challenge, kept in the session's record. Call it after login; a browser
    /// with DBSC then registers a device key, and from then on the session needs
    /// the bound cookie that only that device can renew. Returns whether it was
    /// offered: not without device binding on the layer, on a session already
    /// bound, or on one that is destroyed or not loaded. (On a withheld
    /// session, a new one, it is offered for the new session the write starts.)
    pub fn bind_device(&self) -> bool {
        let Some(mut state) = self.open_or_log("bind_device") else {
            return false;
        };
        Self::offer(&mut state, &self.inner.settings, self.inner.now)
    }

    pub(super) fn offer(state: &mut State, settings: &Settings, now: Timestamp) -> bool {
        if settings.binding.is_none() || state.destroyed {
            return false;
        }
        if state.offered {
            return true;
        }
        if binding_of(&state.data).is_some_and(|entry| entry.key.is_some()) {
            return false;
        }
        let challenge = random_token();
        state.offered = true;
        // Also over what a concurrent request saved: unless that one bound the
        // session meanwhile, the challenge joins its outstanding ones.
        Self::edit_binding(
            state,
            move |mut entry| {
                if entry.key.is_none() {
                    entry.add_challenge(challenge.clone(), now);
                }
                Some(entry)
            },
            false,
        );
        true
    }

    /// Drops the device binding the session came with: the request changes
    /// the session's privilege (a new id, another user), and a binding made
    /// before (by whoever planted the cookie) must not carry over. A
    /// registration this request offered already is offered again, afresh.
    pub(super) fn unbind(state: &mut State, settings: &Settings, now: Timestamp) {
        let removed = state.data.remove(BINDING_KEY);
        if removed.is_none() && settings.binding.is_none() {
            // Nothing bound, and nothing can be: the login costs nothing more.
            return;
        }
        let reoffer = std::mem::take(&mut state.offered);
        if let Some(mut old) = removed {
            // Registered: the browser may hold its bound cookie.
            state.unbound |= Entry::deserialize(&old).is_ok_and(|entry| entry.key.is_some());
            wipe(&mut old);
        }
        // Also from what a concurrent request saved: a registration that lands
        // meanwhile is dropped too.
        state
            .changes
            .entries
            .insert(BINDING_KEY.to_owned(), Change::Removed);
        if reoffer {
            Self::offer(state, settings, now);
        }
    }

    /// Whether this response drops a device binding, so clears its bound
    /// cookie; taken once.
    pub(crate) fn take_unbound(&self) -> bool {
        std::mem::take(&mut self.lock().unbound)
    }

    /// Edits the session's device binding now, and again on the binding a
    /// concurrent request saved should the write meet one. `edit` returning
    /// `None` leaves the binding as it is; with `strict`, it makes this
    /// request's write fail instead (the binding no longer allows the change).
    /// Returns whether `edit` allowed the binding as read.
    fn edit_binding(
        state: &mut State,
        edit: impl Fn(Entry) -> Option<Entry> + Send + Sync + 'static,
        strict: bool,
    ) -> bool {
        let Some(local) = edit(binding_of(&state.data).unwrap_or_default()) else {
            return false;
        };
        let value = serde_json::to_value(local).expect("a binding entry is JSON");
        state.data.insert(BINDING_KEY.to_owned(), value);
        let earlier = state.changes.entries.remove(BINDING_KEY);
        let guard: Guard = Arc::new(move |current: Option<&Value>| {
            let current = match &earlier {
                None => current.cloned(),
                Some(Change::Guarded(earlier)) => Some(earlier(current)?),
                Some(Change::Update(earlier)) => earlier(current).map_err(|_| Lost)?,
                Some(Change::Set(value)) => Some(value.clone()),
                Some(Change::Removed) => None,
            };
            let entry = current
                .and_then(|value| serde_json::from_value::<Entry>(value).ok())
                .unwrap_or_default();
            let kept = match edit(entry.clone()) {
                Some(edited) => edited,
                None if strict => return Err(Lost),
                None => entry,
            };
            Ok(serde_json::to_value(kept).expect("a binding entry is JSON"))
        });
        state
            .changes
            .entries
            .insert(BINDING_KEY.to_owned(), Change::Guarded(guard));
        true
    }

    /// The request's time, from the layer's clock.
    #[inline]
    #[cfg(feature = "device-binding")]
    pub(crate) fn now(&self) -> Timestamp {
        self.inner.now
    }

    /// The session's device binding, if it has one (offered or registered).
    #[cfg(feature = "device-binding")]
    pub(crate) fn binding_entry(&self) -> Option<Entry> {
        binding_of(&self.read("binding_entry").data)
    }

    /// Edits the session's device binding, as read and as a concurrent
    /// request may have saved it (`edit` returning `None` leaves it as it is).
    #[cfg(feature = "device-binding")]
    pub(crate) fn update_binding(
        &self,
        edit: impl Fn(Entry) -> Option<Entry> + Send + Sync + 'static,
    ) {
        if let Some(mut state) = self.open_or_log("update_binding") {
            Self::edit_binding(&mut state, edit, false);
        }
    }

    /// Edits the session's device binding where `edit` allows it. Should a
    /// concurrent request have saved a binding that `edit` does not allow (a
    /// challenge it took already), this request's write fails (503), so its
    /// answer is never sent. Returns whether `edit` allowed the binding as read.
    #[cfg(feature = "device-binding")]
    pub(crate) fn take_binding(
        &self,
        edit: impl Fn(Entry) -> Option<Entry> + Send + Sync + 'static,
    ) -> bool {
        match self.open_or_log("take_binding") {
            Some(mut state) => Self::edit_binding(&mut state, edit, true),
            None => false,
        }
    }

    /// Marks this request as no activity of the session's: a device-binding
    /// request that proved nothing neither slides its deadlines nor touches it,
    /// so a cookie thief asking for challenges cannot keep it alive.
    #[cfg(feature = "device-binding")]
    pub(crate) fn set_quiet(&self) {
        self.lock().quiet = true;
    }

    /// Notes a device-binding success, audited once the session is saved
    /// (a failed save audits a failure instead).
    #[cfg(feature = "device-binding")]
    pub(crate) fn note_binding_event(&self, event: &'static str) {
        let mut state = self.lock();
        // A verified proof is the device's activity.
        state.quiet = false;
        let key = state.loaded.as_ref().map(|loaded| loaded.store_key);
        state.binding_event = Some((event, key));
    }

    /// Audits the device-binding success this request noted, now that its save
    /// ended (`saved`) or was not needed.
    #[cold]
    pub(crate) fn binding_saved(&self, saved: bool) {
        let Some((event, key)) = self.lock().binding_event.take() else {
            return;
        };
        if saved {
            audit_device(event, "success", key.as_ref(), None);
        } else {
            // A concurrent request took the challenge first (or the store
            // failed): nothing was granted.
            audit_device(
                "device_proof_failed",
                "failure",
                key.as_ref(),
                Some("not_saved"),
            );
        }
    }

    /// The challenge of the registration this response offers, taken once.
    pub(crate) fn take_offer(&self) -> Option<String> {
        let mut state = self.lock();
        if !std::mem::take(&mut state.offered) {
            return None;
        }
        binding_of(&state.data)?.challenges.pop().map(|c| c.value)
    }
}

/// The identifier of the device binding `data` holds, once registered: read
/// without building the rest of the binding (its key, its challenges), as every
/// request of a bound session does.
pub(super) fn bound_id(data: &Data) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: Option<String>,
    }
    data.lookup::<Id>(BINDING_KEY)?.ok()?.id
}

/// The device binding `data` holds, if any.
pub(super) fn binding_of(data: &Data) -> Option<Entry> {
    data.lookup::<Entry>(BINDING_KEY).and_then(Result::ok)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::device_binding::DeviceBinding;
    use crate::keys::Keys;
    use crate::open::{Brought, Start};

    fn state_with_binding(binding: Value) -> State {
        let mut settings = Settings::new(Keys::generate());
        settings.binding = Some(DeviceBinding::new());
        let now = Timestamp::from_unix_millis(1_000);
        let mut state = State::start(&settings, now, Start::Fresh(Brought::Nothing));
        state.data.insert(BINDING_KEY.to_owned(), binding);
        state
    }

    /// The binding the write saves over `saved`, what a concurrent request
    /// left: the edit's guard run again.
    fn write_over(state: &State, saved: &Value) -> Result<Value, Lost> {
        let Some(Change::Guarded(guard)) = state.changes.entries.get(BINDING_KEY) else {
            panic!("the edit left no guarded change");
        };
        guard(Some(saved))
    }

    /// Adds the challenge `late` to the binding `mine` only.
    fn add_to_mine(mut entry: Entry) -> Option<Entry> {
        (entry.id.as_deref() == Some("mine")).then(|| {
            entry.add_challenge("late".to_owned(), Timestamp::from_unix_millis(1_000));
            entry
        })
    }

    #[test]
    fn an_edit_is_made_again_over_a_binding_saved_concurrently() {
        for strict in [false, true] {
            let mut state = state_with_binding(json!({ "id": "mine" }));
            assert!(Session::edit_binding(&mut state, add_to_mine, strict));
            let saved =
                json!({ "id": "mine", "challenges": [{ "value": "early", "until": 9_000 }] });
            let written: Entry =
                serde_json::from_value(write_over(&state, &saved).unwrap()).unwrap();
            let values: Vec<&str> = written
                .challenges
                .iter()
                .map(|c| c.value.as_str())
                .collect();
            assert_eq!(values, ["early", "late"], "strict: {strict}");
        }
    }

    #[test]
    fn an_edit_the_concurrent_binding_refuses_leaves_it_or_fails_the_write_when_strict() {
        let theirs = json!({ "id": "theirs" });
        let mut lenient = state_with_binding(json!({ "id": "mine" }));
        assert!(Session::edit_binding(&mut lenient, add_to_mine, false));
        assert_eq!(
            write_over(&lenient, &theirs).unwrap(),
            theirs,
            "a challenge for another binding is not added, the write goes on"
        );
        // A challenge taken (a proof accepted) must not be granted twice.
        let mut strict = state_with_binding(json!({ "id": "mine" }));
        assert!(Session::edit_binding(&mut strict, add_to_mine, true));
        assert!(write_over(&strict, &theirs).is_err());
    }

    /// `unbind` on a login: a binding registered by a concurrent request is
    /// dropped too (the write removes it over what that request saved), and so
    /// is one left in the record by a layer that had binding on before; with
    /// binding off and nothing bound, nothing is written.
    #[test]
    fn a_privilege_change_drops_every_binding_and_costs_nothing_without_one() {
        let now = Timestamp::from_unix_millis(1_000);
        let mut on = Settings::new(Keys::generate());
        on.binding = Some(DeviceBinding::new());
        let mut state = State::start(&on, now, Start::Fresh(Brought::Nothing));
        Session::unbind(&mut state, &on, now);
        let mut saved = Data::from([(BINDING_KEY.to_owned(), json!({ "id": "theirs" }))]);
        state.changes.apply(&mut saved).unwrap();
        assert!(
            binding_of(&saved).is_none(),
            "the concurrent registration is dropped"
        );

        let off = Settings::new(Keys::generate());
        let mut state = State::start(&off, now, Start::Fresh(Brought::Nothing));
        state
            .data
            .insert(BINDING_KEY.to_owned(), json!({ "id": "old" }));
        Session::unbind(&mut state, &off, now);
        assert!(
            binding_of(&state.data).is_none(),
            "a leftover binding is dropped"
        );

        let mut state = State::start(&off, now, Start::Fresh(Brought::Nothing));
        Session::unbind(&mut state, &off, now);
        assert!(
            state.changes.entries.is_empty(),
            "nothing bound, nothing written"
        );
    }

    #[test]
    fn an_edit_the_binding_as_read_refuses_changes_nothing() {
        let mut state = state_with_binding(json!({ "id": "theirs" }));
        assert!(!Session::edit_binding(&mut state, add_to_mine, true));
        assert!(!state.changes.entries.contains_key(BINDING_KEY));
        assert_eq!(binding_of(&state.data).unwrap().challenges, []);
    }
}
