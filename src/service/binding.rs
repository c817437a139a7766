//! Device binding's registration and refresh endpoints, which the layer
//! serves itself ([`device_binding`](crate::device_binding)).

use std::any::Any;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use crate::audit::audit_device;
use crate::cookie::CookieConfig;
use crate::device_binding::proof::{Proof, ProofError};
use crate::device_binding::{Entry, random_token, seal_bound};
use crate::session::Session;
use crate::settings::Settings;

/// Which endpoint a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Register,
    Refresh,
}

/// The endpoint `req` is for, if device binding is on and it is one.
pub(crate) fn route<B>(settings: &Settings, req: &Request<B>) -> Option<Endpoint> {
    let binding = settings.binding.as_ref()?;
    if req.method() != Method::POST {
        return None;
    }
    let path = req.uri().path();
    if path == binding.registration_path {
        Some(Endpoint::Register)
    } else if path == binding.refresh_path {
        Some(Endpoint::Refresh)
    } else {
        None
    }
}

const RESPONSE: &str = "secure-session-response";
const SESSION_ID: &str = "sec-secure-session-id";
const CHALLENGE: &str = "secure-session-challenge";

/// Serves `endpoint` for `session` (not yet loaded): the answer, which the layer
/// then saves the session under as for any response.
pub(crate) async fn serve<B: Default + 'static>(
    endpoint: Endpoint,
    session: Session,
    headers: HeaderMap,
) -> Response<B> {
    session.exempt_from_binding();
    if session.load().await.is_err() {
        // The layer answers for a store that failed.
        return answer(StatusCode::SERVICE_UNAVAILABLE, None);
    }
    // No activity of the session's, unless a proof verifies (below).
    session.set_quiet();
    match endpoint {
        Endpoint::Register => register(&session, &headers),
        Endpoint::Refresh => refresh(&session, &headers),
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    Some(
        value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value),
    )
}

fn register<B: Default + 'static>(session: &Session, headers: &HeaderMap) -> Response<B> {
    let settings = session.settings().clone();
    let binding = settings.binding.as_ref().expect("routed with binding on");
    let now = session.now();
    let key = session.store_key();
    let refuse = |reason: &'static str, detail: &dyn std::fmt::Display| {
        audit_device("device_proof_failed", "failure", key.as_ref(), Some(reason));
        tracing::debug!(target: "tower_sealed_sessions", %detail, "device registration refused");
        answer(StatusCode::BAD_REQUEST, None)
    };
    if session.binding_entry().is_none_or(|e| e.key.is_some()) {
        return refuse(
            "not_offered",
            &"no registration was offered to this session",
        );
    }
    let Some(token) = header_text(headers, RESPONSE) else {
        return refuse("malformed", &"no Secure-Session-Response");
    };
    let proof = match Proof::parse(token) {
        Ok(proof) => proof,
        Err(err) => return refuse(err.reason(), &err),
    };
    if !binding.algorithms.contains(&proof.alg) {
        return refuse("algorithm", &ProofError::Algorithm);
    }
    let Some(device_key) = proof.jwk.clone() else {
        return refuse(
            "key",
            &ProofError::Key("a registration carries its public key"),
        );
    };
    if let Err(err) = proof.verify(&device_key) {
        return refuse(err.reason(), &err);
    }
    let id = random_token();
    let (jti, bound_id) = (proof.jti.clone(), id.clone());
    // Over the binding as read and, should the write meet one, as a concurrent
    // request saved it: still unbound, and the challenge outstanding. A
    // concurrent registration that took it first makes this write fail (503).
    let taken = session.take_binding(move |mut entry| {
        if entry.key.is_some() || !entry.take_challenge(&jti, now) {
            return None;
        }
        entry.id = Some(bound_id.clone());
        entry.key = Some(device_key.clone());
        // Leftover registration challenges answer nothing from now on.
        entry.challenges.clear();
        Some(entry)
    });
    if !taken {
        return refuse("challenge", &"the challenge is unknown, used or expired");
    }
    session.note_binding_event("device_bound");
    bound(&settings, session, &id)
}

/// The longest `Sec-Secure-Session-Id` looked at (a binding identifier is 22
/// characters).
const MAX_SESSION_ID: usize = 64;

/// How long a refresh challenge is handed out again rather than a new one: a
/// browser that asks twice, or a thief who keeps asking, writes nothing.
const CHALLENGE_REUSE: Duration = Duration::from_secs(30);

fn refresh<B: Default + 'static>(session: &Session, headers: &HeaderMap) -> Response<B> {
    let settings = session.settings().clone();
    let binding = settings.binding.as_ref().expect("routed with binding on");
    let now = session.now();
    let key = session.store_key();
    let asked = header_text(headers, SESSION_ID)
        .filter(|id| id.len() <= MAX_SESSION_ID)
        .unwrap_or_default()
        .to_owned();
    let held = session.binding_entry().and_then(|entry| {
        let id = entry.id.clone().filter(|id| *id == asked)?;
        let device_key = entry.key.clone()?;
        Some((entry, id, device_key))
    });
    let Some((entry, id, device_key)) = held else {
        // No such bound session here (logged out, expired, another one): the
        // browser ends its DBSC session.
        audit_device(
            "device_proof_failed",
            "failure",
            key.as_ref(),
            Some("no_session"),
        );
        let body = serde_json::json!({ "session_identifier": asked, "continue": false });
        return answer(StatusCode::UNAUTHORIZED, Some(body));
    };
    let challenge = |entry: &Entry| {
        let value = match entry.recent_challenge(now, CHALLENGE_REUSE) {
            Some(recent) => recent.to_owned(),
            None => {
                let value = random_token();
                let (added, for_id) = (value.clone(), id.clone());
                session.update_binding(move |mut entry| {
                    (entry.id.as_deref() == Some(for_id.as_str())).then(|| {
                        entry.add_challenge(added.clone(), now);
                        entry
                    })
                });
                value
            }
        };
        let mut res: Response<B> = answer(StatusCode::FORBIDDEN, None);
        let line = format!("\"{value}\";id=\"{id}\"");
        res.headers_mut().insert(
            CHALLENGE,
            HeaderValue::try_from(line).expect("base64url tokens form a valid header"),
        );
        res
    };
    let Some(token) = header_text(headers, RESPONSE) else {
        return challenge(&entry);
    };
    let failed = |reason: &'static str| {
        audit_device("device_proof_failed", "failure", key.as_ref(), Some(reason));
    };
    let proof = match Proof::parse(token) {
        Ok(proof) => proof,
        Err(err) => {
            failed(err.reason());
            return answer(StatusCode::BAD_REQUEST, None);
        }
    };
    if !binding.algorithms.contains(&proof.alg) {
        failed("algorithm");
        return answer(StatusCode::BAD_REQUEST, None);
    }
    if proof.jwk.is_some() {
        failed("key");
        return answer(StatusCode::BAD_REQUEST, None);
    }
    if let Err(err) = proof.verify(&device_key) {
        failed(err.reason());
        return answer(StatusCode::BAD_REQUEST, None);
    }
    let (jti, for_id) = (proof.jti.clone(), id.clone());
    // Over the binding as read and, should the write meet one, as a concurrent
    // refresh saved it: the challenge outstanding. A concurrent refresh that
    // took it first makes this write fail (503), its cookie never sent.
    let taken = session.take_binding(move |mut entry| {
        let fits = entry.id.as_deref() == Some(for_id.as_str()) && entry.take_challenge(&jti, now);
        fits.then_some(entry)
    });
    if !taken {
        // A replayed, expired or unknown challenge: a fresh one to sign.
        failed("challenge");
        return challenge(&entry);
    }
    session.note_binding_event("device_refreshed");
    bound(&settings, session, &id)
}

/// 200 with the session instructions and a new bound cookie.
fn bound<B: Default + 'static>(settings: &Settings, session: &Session, id: &str) -> Response<B> {
    let binding = settings.binding.as_ref().expect("routed with binding on");
    let cookie = settings
        .bound_cookie_config()
        .expect("resolved when the layer was built");
    let sealed = seal_bound(
        &settings.keys,
        &cookie.name,
        id,
        session.now(),
        binding.cookie_lifetime,
    )
    .expect("a binding id is 16 bytes of base64url");
    let mut scope = serde_json::json!({ "include_site": false });
    if cookie.path != "/" {
        // Last to first: the cookie's path is in, the rest of the origin out.
        scope["scope_specification"] = serde_json::json!([
            { "type": "exclude", "domain": "*", "path": "/" },
            { "type": "include", "domain": "*", "path": cookie.path },
        ]);
    }
    let body = serde_json::json!({
        "session_identifier": id,
        "refresh_url": binding.refresh_path,
        "scope": scope,
        "credentials": [{ "type": "cookie", "name": cookie.name, "attributes": attributes(&cookie) }],
    });
    let mut res: Response<B> = answer(StatusCode::OK, Some(body));
    res.headers_mut().append(
        header::SET_COOKIE,
        cookie.set(&sealed, Some(binding.cookie_lifetime)),
    );
    res
}

/// The bound cookie's attributes as the session instructions state them: the
/// ones the browser compares (Domain, Path, Secure, HttpOnly, SameSite), exactly
/// as `Set-Cookie` gives them.
fn attributes(cookie: &CookieConfig) -> String {
    let mut out = format!("Path={}", cookie.path);
    if let Some(domain) = &cookie.domain {
        // As the cookie crate writes it in Set-Cookie: without a leading dot.
        out.push_str("; Domain=");
        out.push_str(domain.strip_prefix('.').unwrap_or(domain));
    }
    if cookie.secure {
        out.push_str("; Secure");
    }
    if cookie.http_only {
        out.push_str("; HttpOnly");
    }
    out.push_str("; SameSite=");
    out.push_str(&cookie.same_site.to_string());
    out
}

/// A response of `status`, with `json` as its body when the body type can hold
/// it; never cached.
fn answer<B: Default + 'static>(
    status: StatusCode,
    json: Option<serde_json::Value>,
) -> Response<B> {
    let mut res = Response::new(B::default());
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(json) = json {
        match body_of::<B>(json.to_string()) {
            Some(body) => {
                *res.body_mut() = body;
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            None => tracing::error!(
                target: "tower_sealed_sessions",
                body = std::any::type_name::<B>(),
                "device binding cannot write its JSON answer into this response body type"
            ),
        }
    }
    res
}

/// `text` as a `B`, for the body types the layer knows how to fill: axum's,
/// `String`, `Vec<u8>` and `Bytes`.
fn body_of<B: 'static>(text: String) -> Option<B> {
    let mut slot: Option<B> = None;
    let any: &mut dyn Any = &mut slot;
    #[cfg(feature = "axum")]
    if let Some(slot) = any.downcast_mut::<Option<axum_core::body::Body>>() {
        *slot = Some(axum_core::body::Body::from(text));
        return take(any);
    }
    if let Some(slot) = any.downcast_mut::<Option<String>>() {
        *slot = Some(text);
    } else if let Some(slot) = any.downcast_mut::<Option<Vec<u8>>>() {
        *slot = Some(text.into_bytes());
    } else if let Some(slot) = any.downcast_mut::<Option<bytes::Bytes>>() {
        *slot = Some(bytes::Bytes::from(text));
    }
    take(any)
}

fn take<B: 'static>(any: &mut dyn Any) -> Option<B> {
    any.downcast_mut::<Option<B>>().and_then(Option::take)
}
