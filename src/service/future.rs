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
use crate::cookie::Opened;
use crate::error::StoreError;
use crate::open::{Outcome, open_record};
use crate::plan::{Decision, TokenChange};
use crate::record::{Record, StoreKey};
use crate::session::Session;
use crate::settings::Settings;
use crate::store::BoxFuture;

/// What a request whose record is still loading needs to go on: how to call the
/// inner service, and what to open the record with.
pub(super) struct Pending<F> {
    pub(super) call: Box<dyn FnOnce(Session) -> F + Send>,
    pub(super) settings: Arc<Settings>,
    pub(super) opened: Opened,
    pub(super) store_key: StoreKey,
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
        /// The record is loading; the inner service is called once it is opened.
        Loading {
            load: BoxFuture<Result<Option<Record>, StoreError>>,
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

    pub(super) fn loading(
        load: BoxFuture<Result<Option<Record>, StoreError>>,
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
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.step.as_mut().project() {
                StepProj::Loading { load, pending } => {
                    let loaded = ready!(load.as_mut().poll(cx));
                    let pending = pending.take().expect(POLLED_AFTER_COMPLETION);
                    let Ok(start) = open_record(
                        &pending.settings,
                        *this.now,
                        pending.opened,
                        pending.store_key,
                        loaded,
                    ) else {
                        this.step.set(Step::Done);
                        return Poll::Ready(Ok(unavailable(this.grpc)));
                    };
                    let session = Session::started(pending.settings, *this.now, start);
                    let fut = (pending.call)(session.clone());
                    this.step.set(Step::Calling { fut, session });
                }
                StepProj::Calling { fut, session } => {
                    let mut response = match ready!(fut.poll(cx)) {
                        Ok(response) => response,
                        Err(err) => {
                            this.step.set(Step::Done);
                            return Poll::Ready(Err(err));
                        }
                    };
                    if session.load_failed() {
                        // The handler met a store that failed: whatever it made of
                        // that, the answer is the layer's own, and nothing is saved.
                        this.step.set(Step::Done);
                        return Poll::Ready(Ok(unavailable(this.grpc)));
                    }
                    let failed = response.status().is_server_error() || is_grpc_error(&response);
                    let decision = if failed {
                        tracing::debug!(target: "tower_sealed_sessions", "error response: session not saved");
                        Decision::after_error(session)
                    } else {
                        Decision::take(session)
                    };
                    let settings = session.settings();
                    let plan = match decision {
                        Decision::Done(change) => {
                            change_token(&mut response, change, settings);
                            this.step.set(Step::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Decision::Persist(plan) => plan,
                    };
                    match this.store.persist(settings, plan, *this.now) {
                        Outcome::Done(saved) => {
                            after_save(&mut response, saved, settings, this.grpc);
                            this.step.set(Step::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Outcome::Later(save) => {
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
                    let mut response = response.take().expect(POLLED_AFTER_COMPLETION);
                    after_save(&mut response, saved, session.settings(), this.grpc);
                    this.step.set(Step::Done);
                    return Poll::Ready(Ok(response));
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
