//! Writing the response: the token set or cleared in a cookie or a header, never
//! cacheable; and the answer when the store fails (503, or `grpc-status: 14`).

use http::{HeaderName, HeaderValue, Request, Response, StatusCode, header};

use crate::clock::Timestamp;
use crate::cookie::{self, CookieData};
use crate::error::StoreError;
use crate::plan::TokenChange;
use crate::settings::Settings;

const TARGET: &str = "tower_sealed_sessions";
/// Looked up on every response: a constant name costs no parsing.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The content type of a gRPC (or grpc-web) request, echoed in our own answers.
pub(super) fn grpc_content_type<B>(req: &Request<B>) -> Option<HeaderValue> {
    req.headers()
        .get(header::CONTENT_TYPE)
        .filter(|ct| ct.as_bytes().starts_with(b"application/grpc"))
        .cloned()
}

/// A trailers-only gRPC response whose status is not OK: the gRPC form of a
/// server error, after which nothing is saved either.
pub(super) fn is_grpc_error<B>(res: &Response<B>) -> bool {
    res.headers()
        .get(&GRPC_STATUS)
        .is_some_and(|status| status.as_bytes() != b"0")
}

/// What the application's answer to a store failure is given (see
/// [`SessionLayer::with_unavailable_response`](crate::SessionLayer::with_unavailable_response)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Unavailable {
    /// The request is a gRPC one (its content type is `application/grpc...`):
    /// its client reads `grpc-status`, not a page.
    pub grpc: bool,
}

/// The application's answer to a store failure, for services whose responses
/// have bodies of type `B`.
pub(crate) type UnavailableFn<B> =
    std::sync::Arc<dyn Fn(&Unavailable) -> Option<Response<B>> + Send + Sync>;

/// The answer when the store cannot be used: the application's, when it gave
/// one (for this body type) and it answers; otherwise 503 with `Retry-After`,
/// or for a gRPC request (whose content type is `grpc`) a trailers-only
/// `UNAVAILABLE`.
pub(super) fn unavailable<B: Default + 'static>(
    settings: &Settings,
    grpc: &Option<HeaderValue>,
) -> Response<B> {
    if let Some(hook) = &settings.unavailable {
        match hook.hook.downcast_ref::<UnavailableFn<B>>() {
            Some(answer) => {
                let failure = Unavailable {
                    grpc: grpc.is_some(),
                };
                if let Some(res) = answer(&failure) {
                    return res;
                }
            }
            None => tracing::error!(
                target: TARGET,
                hook_body = hook.body,
                service_body = std::any::type_name::<B>(),
                "with_unavailable_response was given for responses of another body type than \
                 this service's: the default answer is used"
            ),
        }
    }
    default_unavailable(grpc)
}

fn default_unavailable<B: Default>(grpc: &Option<HeaderValue>) -> Response<B> {
    let mut res = Response::new(B::default());
    if let Some(content_type) = grpc {
        let headers = res.headers_mut();
        // A trailers-only gRPC response: status 200 with grpc-status in the headers
        // (gRPC over HTTP/2 protocol, "Responses"). 14 is UNAVAILABLE, which clients
        // may retry.
        headers.insert(header::CONTENT_TYPE, content_type.clone());
        headers.insert(GRPC_STATUS, HeaderValue::from_static("14"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("session store unavailable"),
        );
    } else {
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    res
}

/// Once the store has been written: the response's token set or cleared, or the
/// response replaced by 503 when the write failed.
pub(super) fn after_save<B: Default + 'static>(
    response: &mut Response<B>,
    saved: Result<TokenChange, StoreError>,
    settings: &Settings,
    grpc: &Option<HeaderValue>,
) {
    match saved {
        Ok(change) => change_token(response, change, settings),
        Err(err) => {
            tracing::error!(target: TARGET, error = %err, "session save failed");
            *response = unavailable(settings, grpc);
        }
    }
}

/// Changes the response's token as `change` says.
#[inline]
pub(super) fn change_token<B>(
    response: &mut Response<B>,
    change: TokenChange,
    settings: &Settings,
) {
    let value = match change {
        TokenChange::Keep => return,
        TokenChange::Set(value) => value,
        TokenChange::Clear => settings.cleared(),
    };
    carry_token(response, value, settings);
}

/// Puts `value` (a token, or its removal) into the response's cookie or header.
fn carry_token<B>(response: &mut Response<B>, value: HeaderValue, settings: &Settings) {
    let headers = response.headers_mut();
    match &settings.header {
        None => {
            headers.append(header::SET_COOKIE, value);
        }
        Some(name) => {
            headers.insert(name.clone(), value);
        }
    }
    // A response that hands out a session token must never be stored by a shared
    // cache (RFC 9111, section 5.2.2.7): a CDN would give it to other users. The
    // application's own Cache-Control loses here, even `public`.
    let previous = headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if previous.as_ref().is_some_and(|v| v != "no-store") {
        tracing::debug!(target: TARGET, ?previous, "Cache-Control replaced by no-store on a response carrying the session token");
    }
}

/// A new token for `identity`, sealed and rendered for its carrier.
pub(super) fn set_token(settings: &Settings, now: Timestamp, identity: &CookieData) -> TokenChange {
    let token = cookie::seal(&settings.keys, settings.token_name(), identity);
    // Remember-me sessions outlive the browser: a persistent cookie that ends with
    // the lifespan. Others are browser-session cookies.
    let max_age = (identity.remember_me && !identity.lifespan_deadline.is_never())
        .then(|| identity.lifespan_deadline.saturating_since(now));
    TokenChange::Set(settings.carried(&token, max_age))
}
