//! [`TestDevice`]: a DBSC client for tests, with a real ES256 key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

/// A device as a DBSC browser is one: an ES256 key pair (in memory, not in
/// secure hardware) that signs registration and refresh proofs, for testing an
/// application's device binding end to end without a browser. Feature
/// `test-util` (with `device-binding`).
///
/// ```
/// use tower_sealed_sessions::device_binding::TestDevice;
///
/// let device = TestDevice::new();
/// // For `Secure-Session-Response` on the registration path: the public key in
/// // the header, the challenge from `Secure-Session-Registration`.
/// let registration = device.registration_proof("challenge-1");
/// // On the refresh path, for the challenge of the 403's `Secure-Session-Challenge`.
/// let refresh = device.refresh_proof("challenge-2");
/// assert_eq!(registration.split('.').count(), 3);
/// assert_ne!(registration, refresh);
/// ```
pub struct TestDevice {
    key: EcdsaKeyPair,
}

impl Default for TestDevice {
    fn default() -> Self {
        TestDevice::new()
    }
}

impl std::fmt::Debug for TestDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDevice")
            .field("jwk", &self.jwk())
            .finish()
    }
}

impl TestDevice {
    /// A device with a fresh random P-256 key.
    pub fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("the system's random generator works");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("a key ring just made");
        TestDevice { key }
    }

    /// The public key as a JWK: `{"kty": "EC", "crv": "P-256", "x": ..., "y": ...}`.
    pub fn jwk(&self) -> serde_json::Value {
        let point = self.key.public_key().as_ref();
        serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        })
    }

    /// A registration proof for `challenge`: a `dbsc+jwt` with the public key
    /// in its header, signed by the key.
    pub fn registration_proof(&self, challenge: &str) -> String {
        self.sign(
            serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt", "jwk": self.jwk()}),
            challenge,
        )
    }

    /// A refresh proof for `challenge`: a `dbsc+jwt` without the key.
    pub fn refresh_proof(&self, challenge: &str) -> String {
        self.sign(
            serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt"}),
            challenge,
        )
    }

    /// Signs a JWT of `header` whose payload is `{"jti": jti}`.
    pub fn sign(&self, header: serde_json::Value, jti: &str) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::json!({ "jti": jti }).to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("ECDSA signs any message");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

/// The challenge of a `Secure-Session-Registration` value such as
/// `(ES256 RS256);path="/reg";challenge="abc"`, if it has one.
pub fn registration_challenge(header: &str) -> Option<&str> {
    quoted_param(header, "challenge")
}

/// The challenge and session identifier of a `Secure-Session-Challenge` value
/// such as `"abc";id="sid"`.
pub fn refresh_challenge(header: &str) -> Option<(&str, &str)> {
    let (challenge, _) = header.split_once(';')?;
    let challenge = challenge.trim().strip_prefix('"')?.strip_suffix('"')?;
    Some((challenge, quoted_param(header, "id")?))
}

fn quoted_param<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    let start = header.find(&format!(";{name}=\""))? + name.len() + 3;
    let rest = &header[start..];
    Some(&rest[..rest.find('"')?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device_binding::proof::Proof;

    #[test]
    fn a_refresh_proof_answers_its_challenge_signed_by_the_registered_key_without_it() {
        let device = TestDevice::new();
        let registration = device.registration_proof("c1");
        let registration = Proof::parse(&registration).unwrap();
        assert_eq!(registration.jti, "c1");
        let key = registration
            .jwk
            .clone()
            .expect("a registration carries its key");
        registration.verify(&key).unwrap();
        let refresh = device.refresh_proof("c2");
        let refresh = Proof::parse(&refresh).unwrap();
        assert_eq!(refresh.jti, "c2");
        assert!(refresh.jwk.is_none(), "a refresh carries no key");
        refresh.verify(&key).unwrap();
    }

    #[test]
    fn debug_shows_the_public_key_and_nothing_else() {
        let device = TestDevice::new();
        assert_eq!(
            format!("{device:?}"),
            format!("TestDevice {{ jwk: {:?} }}", device.jwk())
        );
    }
}
