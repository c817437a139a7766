//! [`ResponseFuture`]: awaits the record's load when the store must be awaited,
//! then the inner service, then the write of what the request changed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{HeaderValue, Response};
use pin_project_lite::pin_project;

use super::erased::DynStore;
use super::response::{after_save, change_token, is_grpc_error, unavailable};
use crate::clock::Timestamp;
use crate::error::{SessionError, StoreError};
use crate::open::Outcome;
use crate::plan::{Decision, TokenChange};
use crate::session::Session;
use crate::store::BoxFuture;

/// What a request whose session is still loading needs to go on: how to call
/// the inner service (the request holds the session already), and the session.
pub(super) struct Pending<F> {
    pub(super) call: Box<dyn FnOnce() -> F + Send>,
    pub(super) session: Session,
}

pin_project! {
    /// Response future of [`SessionService`](super::SessionService).
    pub struct ResponseFuture<F, B> {
        #[pin]
        step: Step<F, B>,
        store: Arc<dyn DynStore>,
        now: Timestamp,
        grpc: Option<HeaderValue>,
    }
}

pin_project! {
    #[project = StepProj]
    enum Step<F, B> {
        /// The session is loading; the inner service is called once it is open.
        Loading {
            load: BoxFuture<Result<(), SessionError>>,
            pending: Option<Pending<F>>,
        },
        /// The inner service is answering.
        Calling {
            #[pin]
            fut: F,
            session: Session,
        },
        /// The response is ready; the store is being written.
        Saving {
            save: BoxFuture<Result<TokenChange, StoreError>>,
            session: Session,
            response: Option<Response<B>>,
        },
        /// The layer itself is answering (a device-binding endpoint).
        Serving {
            fut: BoxFuture<Response<B>>,
            session: Session,
        },
        /// The inner service is answering a request the layer gave no session.
        Passing {
            #[pin]
            fut: F,
        },
        /// Answered without calling the inner service.
        Answered {
            response: Option<Response<B>>,
        },
        Done,
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(super) fn answered(
        response: Response<B>,
        store: &Arc<dyn DynStore>,
        now: Timestamp,
        grpc: Option<HeaderValue>,
    ) -> Self {
        Self::at(
            Step::Answered {
                response: Some(response),
            },
            store,
            now,
            grpc,
        )
    }

    pub(super) fn calling(
        fut: F,
        session: Session,
        store: &Arc<dyn DynStore>,
        now: Timestamp,
        grpc: Option<HeaderValue>,
    ) -> Self {
        Self::at(Step::Calling { fut, session }, store, now, grpc)
    }

    /// The layer's own answer (a device-binding endpoint), saved as any.
    #[cfg(feature = "device-binding")]
    pub(super) fn serving(
        fut: BoxFuture<Response<B>>,
        session: Session,
        store: &Arc<dyn DynStore>,
        now: Timestamp,
        grpc: Option<HeaderValue>,
    ) -> Self {
        Self::at(Step::Serving { fut, session }, store, now, grpc)
    }

    /// The inner service's answer, as it is: the request has no session.
    pub(super) fn passing(fut: F, store: &Arc<dyn DynStore>, now: Timestamp) -> Self {
        Self::at(Step::Passing { fut }, store, now, None)
    }

    pub(super) fn loading(
        load: BoxFuture<Result<(), SessionError>>,
        pending: Pending<F>,
        store: &Arc<dyn DynStore>,
        now: Timestamp,
        grpc: Option<HeaderValue>,
    ) -> Self {
        let step = Step::Loading {
            load,
            pending: Some(pending),
        };
        Self::at(step, store, now, grpc)
    }

    fn at(
        step: Step<F, B>,
        store: &Arc<dyn DynStore>,
        now: Timestamp,
        grpc: Option<HeaderValue>,
    ) -> Self {
        ResponseFuture {
            step,
            store: store.clone(),
            now,
            grpc,
        }
    }
}

const POLLED_AFTER_COMPLETION: &str = "ResponseFuture polled after completion";

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default + 'static,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.step.as_mut().project() {
                StepProj::Loading { load, pending } => {
                    let loaded = ready!(load.as_mut().poll(cx));
                    let Pending { call, session } = pending.take().expect(POLLED_AFTER_COMPLETION);
                    if loaded.is_err() {
                        let response = unavailable(session.settings(), this.grpc);
                        this.step.set(Step::Done);
                        return Poll::Ready(Ok(response));
                    }
                    let fut = call();
                    this.step.set(Step::Calling { fut, session });
                }
                StepProj::Calling { fut, session } => {
                    let response = match ready!(fut.poll(cx)) {
                        Ok(response) => response,
                        Err(err) => {
                            this.step.set(Step::Done);
                            return Poll::Ready(Err(err));
                        }
                    };
                    let mut response = response;
                    match respond(&mut response, session, this.store, *this.now, this.grpc) {
                        None => {
                            this.step.set(Step::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Some(save) => {
                            let session = session.clone();
                            this.step.set(Step::Saving {
                                save,
                                session,
                                response: Some(response),
                            });
                        }
                    }
                }
                StepProj::Serving { fut, session } => {
                    let response = ready!(fut.as_mut().poll(cx));
                    let mut response = response;
                    match respond(&mut response, session, this.store, *this.now, this.grpc) {
                        None => {
                            this.step.set(Step::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Some(save) => {
                            let session = session.clone();
                            this.step.set(Step::Saving {
                                save,
                                session,
                                response: Some(response),
                            });
                        }
                    }
                }
                StepProj::Saving {
                    save,
                    session,
                    response,
                } => {
                    let saved = ready!(save.as_mut().poll(cx));
                    let ok = saved.is_ok();
                    let mut response = response.take().expect(POLLED_AFTER_COMPLETION);
                    after_save(&mut response, saved, session.settings(), this.grpc);
                    if session.settings().binding.is_some() {
                        binding_saved(&mut response, session, ok);
                    }
                    this.step.set(Step::Done);
                    return Poll::Ready(Ok(response));
                }
                StepProj::Passing { fut } => {
                    let answered = ready!(fut.poll(cx));
                    this.step.set(Step::Done);
                    return Poll::Ready(answered);
                }
                StepProj::Answered { response } => {
                    let response = response.take().expect(POLLED_AFTER_COMPLETION);
                    this.step.set(Step::Done);
                    return Poll::Ready(Ok(response));
                }
                StepProj::Done => panic!("{POLLED_AFTER_COMPLETION}"),
            }
        }
    }
}

/// Decides what the request's session needs saved, and saves it or starts
/// saving it: the step after the inner service (or the layer itself) has
/// answered. `response` is final when this returns `None`, and once the save
/// it returns ends otherwise.
// Inlined into both steps that end in a response: called out of line, it
// cost every request about 120 instructions (callgrind, no_cookie).
#[inline(always)]
fn respond<B: Default + 'static>(
    response: &mut Response<B>,
    session: &Session,
    store: &Arc<dyn DynStore>,
    now: Timestamp,
    grpc: &Option<HeaderValue>,
) -> Option<BoxFuture<Result<TokenChange, StoreError>>> {
    if session.load_failed() {
        // The handler met a store that failed: whatever it made of that, the
        // answer is the layer's own, and nothing is saved.
        *response = unavailable(session.settings(), grpc);
        return None;
    }
    let failed = response.status().is_server_error() || is_grpc_error(response);
    let decision = if failed {
        tracing::debug!(target: "tower_sealed_sessions", "error response: session not saved");
        Decision::after_error(session)
    } else {
        if session.settings().binding.is_some() {
            offer_binding(response, session);
        }
        Decision::take(session)
    };
    let settings = session.settings();
    let plan = match decision {
        Decision::Done(change) => {
            change_token(response, change, settings);
            if settings.binding.is_some() {
                binding_saved(response, session, true);
            }
            return None;
        }
        Decision::Persist(plan) => plan,
    };
    match store.persist(settings, plan, now) {
        Outcome::Done(saved) => {
            let ok = saved.is_ok();
            after_save(response, saved, settings, grpc);
            if settings.binding.is_some() {
                binding_saved(response, session, ok);
            }
            None
        }
        Outcome::Later(save) => Some(save),
    }
}

/// Once the session's save ended (`saved`) or was not needed: device
/// binding's audit event, and the bound cookie cleared when a privilege change
/// dropped its binding (after the session's own cookie, which clients that
/// read one `Set-Cookie` look for).
#[cold]
fn binding_saved<B>(response: &mut Response<B>, session: &Session, saved: bool) {
    session.binding_saved(saved);
    if saved && session.take_unbound() {
        let cookie = session
            .settings()
            .bound_cookie_config()
            .expect("resolved when the layer was built");
        response
            .headers_mut()
            .append(http::header::SET_COOKIE, cookie.clear());
    }
}

/// The device-binding registration the handler offered
/// ([`Session::bind_device`]), if any: its header. Should the save fail, the
/// layer's 503 replaces the response, header and all.
#[cold]
fn offer_binding<B>(response: &mut Response<B>, session: &Session) {
    let Some(binding) = &session.settings().binding else {
        return;
    };
    let Some(challenge) = session.take_offer() else {
        return;
    };
    let value = binding.registration_header(&challenge);
    match HeaderValue::try_from(value) {
        Ok(value) => {
            response
                .headers_mut()
                .insert("secure-session-registration", value);
        }
        Err(_) => {
            tracing::error!(target: "tower_sealed_sessions", "the registration path does not fit in a header")
        }
    }
}
