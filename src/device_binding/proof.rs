//! DBSC proofs: the `Secure-Session-Response` JWT (a compact JWS), parsed and
//! verified with ring (ES256, RS256).

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature;
use serde::Deserialize;

use super::{Algorithm, DeviceKey};

/// Longer tokens are refused before any decoding (an RS256 proof with an 8192-bit
/// key and its JWK is about 3 KB).
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// A proof, parsed but not yet verified.
pub(crate) struct Proof<'a> {
    pub(crate) alg: Algorithm,
    /// The public key the header carries (registration only).
    pub(crate) jwk: Option<DeviceKey>,
    /// The challenge the proof answers.
    pub(crate) jti: String,
    signing_input: &'a [u8],
    signature: Vec<u8>,
}

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProofError {
    /// Not a compact JWS with JSON header and payload.
    Malformed(&'static str),
    /// `typ` is not `dbsc+jwt`.
    Type,
    /// An algorithm not offered, or not the device key's.
    Algorithm,
    /// The JWK is missing, unreadable or not of the algorithm's kind; or present
    /// where it must not be (a refresh).
    Key(&'static str),
    /// The signature does not verify.
    Signature,
}

impl ProofError {
    /// The audit event's `reason`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            ProofError::Malformed(_) => "malformed",
            ProofError::Type => "type",
            ProofError::Algorithm => "algorithm",
            ProofError::Key(_) => "key",
            ProofError::Signature => "signature",
        }
    }
}

impl fmt::Display for ProofError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProofError::Malformed(what) => write!(f, "malformed proof: {what}"),
            ProofError::Type => f.write_str("the proof's typ is not dbsc+jwt"),
            ProofError::Algorithm => f.write_str("the proof's algorithm is not one allowed"),
            ProofError::Key(what) => write!(f, "the proof's key: {what}"),
            ProofError::Signature => f.write_str("the proof's signature does not verify"),
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    typ: Option<String>,
    jwk: Option<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

#[derive(Deserialize)]
struct Payload {
    jti: Option<String>,
}

fn decode(part: &str, what: &'static str) -> Result<Vec<u8>, ProofError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| ProofError::Malformed(what))
}

impl<'a> Proof<'a> {
    /// Parses a proof as the header carries it (quoted or not).
    pub(crate) fn parse(token: &'a str) -> Result<Self, ProofError> {
        let token = token.trim();
        let token = token
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .unwrap_or(token);
        if token.len() > MAX_TOKEN_LEN {
            return Err(ProofError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ProofError::Malformed("not three parts"));
        };
        let header: Header = serde_json::from_slice(&decode(header, "header")?)
            .map_err(|_| ProofError::Malformed("header"))?;
        let payload: Payload = serde_json::from_slice(&decode(payload, "payload")?)
            .map_err(|_| ProofError::Malformed("payload"))?;
        if header.typ.as_deref() != Some("dbsc+jwt") {
            return Err(ProofError::Type);
        }
        let alg = match header.alg.as_str() {
            "ES256" => Algorithm::Es256,
            "RS256" => Algorithm::Rs256,
            _ => return Err(ProofError::Algorithm),
        };
        let jwk = header.jwk.map(|jwk| jwk.to_key(alg)).transpose()?;
        let jti = payload.jti.ok_or(ProofError::Malformed("no jti"))?;
        let signing_input = &token.as_bytes()[..token.rfind('.').expect("three parts")];
        Ok(Proof {
            alg,
            jwk,
            jti,
            signing_input,
            signature: decode(signature, "signature")?,
        })
    }

    /// Checks the signature with `key`, whose algorithm must be the proof's.
    pub(crate) fn verify(&self, key: &DeviceKey) -> Result<(), ProofError> {
        if key.algorithm() != self.alg {
            return Err(ProofError::Algorithm);
        }
        let verified = match key {
            DeviceKey::Es256 { point } => {
                let point = decode(point, "stored key")?;
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(self.signing_input, &self.signature)
            }
            DeviceKey::Rs256 { n, e } => {
                let (n, e) = (decode(n, "stored key")?, decode(e, "stored key")?);
                signature::RsaPublicKeyComponents { n: &n, e: &e }.verify(
                    &signature::RSA_PKCS1_2048_8192_SHA256,
                    self.signing_input,
                    &self.signature,
                )
            }
        };
        verified.map_err(|_| ProofError::Signature)
    }
}

impl Jwk {
    /// The key this JWK describes, which must suit `alg`.
    fn to_key(&self, alg: Algorithm) -> Result<DeviceKey, ProofError> {
        let field = |value: &Option<String>, what: &'static str| {
            let value = value.as_deref().ok_or(ProofError::Key(what))?;
            URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|_| ProofError::Key(what))
        };
        match (alg, self.kty.as_str()) {
            (Algorithm::Es256, "EC") => {
                if self.crv.as_deref() != Some("P-256") {
                    return Err(ProofError::Key("an ES256 key is on P-256"));
                }
                let (x, y) = (field(&self.x, "x")?, field(&self.y, "y")?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(ProofError::Key("P-256 coordinates are 32 bytes"));
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Ok(DeviceKey::Es256 {
                    point: URL_SAFE_NO_PAD.encode(point),
                })
            }
            (Algorithm::Rs256, "RSA") => {
                // ring refuses leading zero bytes in the modulus and exponent.
                let strip = |bytes: Vec<u8>| {
                    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
                    URL_SAFE_NO_PAD.encode(&bytes[start..])
                };
                Ok(DeviceKey::Rs256 {
                    n: strip(field(&self.n, "n")?),
                    e: strip(field(&self.e, "e")?),
                })
            }
            _ => Err(ProofError::Key("its kind does not suit the algorithm")),
        }
    }
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    use super::*;

    fn b64(bytes: impl AsRef<[u8]>) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn es256() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    }

    fn jwk(key: &EcdsaKeyPair) -> serde_json::Value {
        let point = key.public_key().as_ref();
        serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..])})
    }

    fn sign(key: &EcdsaKeyPair, header: serde_json::Value, jti: &str) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string()),
            b64(serde_json::json!({ "jti": jti }).to_string())
        );
        let sig = key.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig))
    }

    #[test]
    fn a_registration_proof_verifies_with_its_own_key_only() {
        let key = es256();
        let token = sign(
            &key,
            serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt", "jwk": jwk(&key)}),
            "c1",
        );
        let proof = Proof::parse(&token).unwrap();
        assert_eq!(proof.jti, "c1");
        let stored = proof.jwk.clone().unwrap();
        proof.verify(&stored).unwrap();
        // Quoted, as the spec's structured string.
        Proof::parse(&format!("\"{token}\""))
            .unwrap()
            .verify(&stored)
            .unwrap();
        // The same claims signed by another key.
        let other = sign(
            &es256(),
            serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt"}),
            "c1",
        );
        assert_eq!(
            Proof::parse(&other).unwrap().verify(&stored),
            Err(ProofError::Signature)
        );
    }

    #[test]
    fn malformed_and_mistyped_proofs_are_refused() {
        let key = es256();
        let wrong_typ = sign(&key, serde_json::json!({"alg": "ES256", "typ": "JWT"}), "c");
        assert_eq!(Proof::parse(&wrong_typ).err(), Some(ProofError::Type));
        let none = sign(
            &key,
            serde_json::json!({"alg": "none", "typ": "dbsc+jwt"}),
            "c",
        );
        assert_eq!(Proof::parse(&none).err(), Some(ProofError::Algorithm));
        let rsa_jwk = sign(
            &key,
            serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt", "jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}),
            "c",
        );
        assert!(matches!(
            Proof::parse(&rsa_jwk).err(),
            Some(ProofError::Key(_))
        ));
        for garbage in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            &"a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(
                matches!(Proof::parse(garbage).err(), Some(ProofError::Malformed(_))),
                "{garbage:.20}"
            );
        }
    }

    /// A registration proof by `key` of exactly `len` bytes, padded in its
    /// `jti` and, since base64url has no length 4k + 1, in an extra header
    /// field (unknown fields are ignored).
    fn proof_of_len(key: &EcdsaKeyPair, len: usize) -> String {
        let b64_len = |bytes: usize| (4 * bytes).div_ceil(3);
        let signature = b64_len(64);
        let bare_payload = serde_json::json!({ "jti": "" }).to_string().len();
        for pad in 0..4 {
            let header = serde_json::json!({
                "alg": "ES256", "typ": "dbsc+jwt", "jwk": jwk(key), "pad": "p".repeat(pad),
            });
            let fixed = b64_len(header.to_string().len()) + 1 + 1 + signature;
            let jti_len = (0..len).find(|n| fixed + b64_len(bare_payload + n) == len);
            if let Some(jti_len) = jti_len {
                let token = sign(key, header, &"j".repeat(jti_len));
                assert_eq!(token.len(), len);
                return token;
            }
        }
        panic!("no padding makes a proof of {len} bytes")
    }

    #[test]
    fn a_proof_of_8_kib_is_read_and_one_byte_longer_is_refused_as_too_long() {
        let key = es256();
        // The bound written out, not MAX_TOKEN_LEN: a changed constant must
        // fail here.
        let longest = proof_of_len(&key, 8 * 1024);
        let proof = Proof::parse(&longest).unwrap();
        proof.verify(proof.jwk.as_ref().unwrap()).unwrap();
        // The quotes of the structured string are not counted.
        Proof::parse(&format!("\"{longest}\"")).unwrap();
        // A proof that is otherwise well formed and signed.
        let over = proof_of_len(&key, 8 * 1024 + 1);
        assert_eq!(
            Proof::parse(&over).err(),
            Some(ProofError::Malformed("too long"))
        );
        let far_over = proof_of_len(&key, 3 * 8 * 1024);
        assert_eq!(
            Proof::parse(&far_over).err(),
            Some(ProofError::Malformed("too long"))
        );
    }

    #[test]
    fn a_p256_jwk_is_refused_when_either_coordinate_is_not_32_bytes() {
        let key = es256();
        let good = jwk(&key);
        for (coordinate, len) in [("x", 31), ("x", 33), ("y", 31), ("y", 33), ("y", 0)] {
            let mut bad = good.clone();
            bad[coordinate] = b64(vec![7u8; len]).into();
            let token = sign(
                &key,
                serde_json::json!({"alg": "ES256", "typ": "dbsc+jwt", "jwk": bad}),
                "c",
            );
            assert_eq!(
                Proof::parse(&token).err(),
                Some(ProofError::Key("P-256 coordinates are 32 bytes")),
                "{coordinate} of {len} bytes, the other one 32"
            );
        }
    }

    #[test]
    fn each_proof_error_says_what_was_wrong_and_names_its_audit_reason() {
        // The texts reach the debug log of a refused registration.
        let cases = [
            (
                ProofError::Malformed("no jti"),
                "malformed proof: no jti",
                "malformed",
            ),
            (ProofError::Type, "the proof's typ is not dbsc+jwt", "type"),
            (
                ProofError::Algorithm,
                "the proof's algorithm is not one allowed",
                "algorithm",
            ),
            (ProofError::Key("x"), "the proof's key: x", "key"),
            (
                ProofError::Signature,
                "the proof's signature does not verify",
                "signature",
            ),
        ];
        for (error, text, reason) in cases {
            assert_eq!(error.to_string(), text);
            assert_eq!(error.reason(), reason, "{error:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_tokens_never_panic(token in ".{0,300}") {
            if let Ok(proof) = Proof::parse(&token) {
                if let Some(key) = &proof.jwk {
                    let _ = proof.verify(key);
                }
            }
        }
    }
}
