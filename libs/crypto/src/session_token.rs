//! Session tokens: `idm1.<kid>.<claims>.<mac>`, where claims is base64url JSON
//! and mac is HMAC-SHA256 under the issuer's key named by kid. Verified
//! statelessly at the edge against the calling issuer's key ring only, so a
//! token of issuer A never verifies at issuer B.

use crate::CryptoError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use idm_core::{IssuerId, Region, SessionId, UserId};
use serde::{Deserialize, Serialize};

const VERSION: &str = "idm1";
/// Verification results (the verification API) are signed the same way under
/// the issuer's key, with their own prefix so neither can pass for the other.
pub const VERIFICATION_VERSION: &str = "idmv1";
const MAX_TOKEN_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    pub iss: IssuerId,
    pub sid: SessionId,
    pub sub: UserId,
    pub reg: Region,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token was signed with an unknown key")]
    UnknownKey,
    #[error("token signature does not match")]
    BadSignature,
    #[error("token belongs to another issuer")]
    WrongIssuer,
    #[error("token has expired")]
    Expired,
}

/// A signing key: id plus 32 secret bytes, zeroed on drop.
pub struct RingKey {
    pub kid: String,
    pub secret: zeroize::Zeroizing<[u8; 32]>,
}

/// What a verification token says: this issuer verified this address then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationClaims {
    pub iss: IssuerId,
    pub vid: String,
    pub email: String,
    pub verified_at: i64,
}

fn mac_input(version: &str, kid: &str, claims_b64: &str) -> String {
    format!("{version}.{kid}.{claims_b64}")
}

pub fn sign(key: &RingKey, claims: &SessionClaims) -> Result<String, CryptoError> {
    sign_as(VERSION, key, claims)
}

pub fn sign_verification(
    key: &RingKey,
    claims: &VerificationClaims,
) -> Result<String, CryptoError> {
    sign_as(VERIFICATION_VERSION, key, claims)
}

/// A payload that does not serialize is an error: signing an empty payload
/// instead would hand out a valid MAC over claims nobody chose.
fn sign_as<C: Serialize>(version: &str, key: &RingKey, claims: &C) -> Result<String, CryptoError> {
    let json =
        serde_json::to_vec(claims).map_err(|e| CryptoError::Unserializable(e.to_string()))?;
    let claims_b64 = URL_SAFE_NO_PAD.encode(json);
    let input = mac_input(version, &key.kid, &claims_b64);
    let mac = crate::hmac_sha256(key.secret.as_ref(), input.as_bytes());
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac)))
}

/// A session token for `session` issued now under `key` (the issuer's
/// current signing key), and when it expires: after the issuer's session
/// lifetime, never past the session's own end. At sign-in and at every
/// refresh, whichever service signs.
pub fn issue(
    key: &RingKey,
    issuer: &IssuerId,
    session: &idm_core::proto::store::SessionRecord,
    region: Region,
    lifetime_seconds: u32,
) -> Result<(String, idm_core::Timestamp), CryptoError> {
    let now = idm_core::now();
    let expires_at =
        (now + time::Duration::seconds(i64::from(lifetime_seconds))).min(session.expires_at);
    let claims = SessionClaims {
        iss: issuer.clone(),
        sid: session.id.clone(),
        sub: session.user_id.clone(),
        reg: region,
        iat: now.unix_timestamp(),
        exp: expires_at.unix_timestamp(),
    };
    Ok((sign(key, &claims)?, expires_at))
}

/// The key id a token names, for looking up a ring before verifying.
pub fn kid_of(token: &str) -> Option<&str> {
    let mut parts = token.splitn(3, '.');
    (parts.next() == Some(VERSION)).then_some(())?;
    parts.next().filter(|k| !k.is_empty() && k.len() <= 64)
}

/// Verifies `token` for `issuer` with `find_key` over that issuer's ring.
pub fn verify<'a>(
    token: &str,
    issuer: &IssuerId,
    now_unix: i64,
    find_key: impl Fn(&str) -> Option<&'a RingKey>,
) -> Result<SessionClaims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [version, kid, claims_b64, mac_b64] = parts.as_slice() else {
        return Err(TokenError::Malformed);
    };
    if *version != VERSION {
        return Err(TokenError::Malformed);
    }
    let key = find_key(kid).ok_or(TokenError::UnknownKey)?;
    let given = URL_SAFE_NO_PAD
        .decode(mac_b64)
        .map_err(|_| TokenError::Malformed)?;
    let expected = crate::hmac_sha256(
        key.secret.as_ref(),
        mac_input(VERSION, kid, claims_b64).as_bytes(),
    );
    if !crate::ct_eq(&given, &expected) {
        return Err(TokenError::BadSignature);
    }
    let json = URL_SAFE_NO_PAD
        .decode(claims_b64)
        .map_err(|_| TokenError::Malformed)?;
    let claims: SessionClaims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if &claims.iss != issuer {
        return Err(TokenError::WrongIssuer);
    }
    if claims.exp <= now_unix {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, byte: u8) -> RingKey {
        RingKey {
            kid: kid.into(),
            secret: zeroize::Zeroizing::new([byte; 32]),
        }
    }

    fn claims(iss: &IssuerId) -> SessionClaims {
        SessionClaims {
            iss: iss.clone(),
            sid: SessionId::generate(),
            sub: UserId::generate(),
            reg: Region::Weur,
            iat: 100,
            exp: 1_000,
        }
    }

    #[test]
    fn tokens_verify_only_for_their_issuer_key_and_lifetime() -> Result<(), CryptoError> {
        let a = IssuerId::generate();
        let b = IssuerId::generate();
        let ka = key("ka", 1);
        let kb = key("kb", 2);
        let token = sign(&ka, &claims(&a))?;
        let ring_a = |kid: &str| (kid == "ka").then_some(&ka);
        let ring_b = |kid: &str| (kid == "kb").then_some(&kb);
        assert!(verify(&token, &a, 500, ring_a).is_ok());
        assert_eq!(verify(&token, &a, 1_000, ring_a), Err(TokenError::Expired));
        assert_eq!(verify(&token, &b, 500, ring_b), Err(TokenError::UnknownKey));
        // Even a ring that happened to hold the same kid cannot verify it for B.
        assert_eq!(
            verify(&token, &b, 500, ring_a),
            Err(TokenError::WrongIssuer)
        );
        let forged = key("ka", 9);
        assert_eq!(
            verify(&token, &a, 500, |_| Some(&forged)),
            Err(TokenError::BadSignature)
        );
        assert_eq!(kid_of(&token), Some("ka"));
        Ok(())
    }

    #[test]
    fn any_bit_flip_or_truncation_is_refused() -> Result<(), CryptoError> {
        let a = IssuerId::generate();
        let k = key("ka", 1);
        let token = sign(&k, &claims(&a))?;
        let ring = |kid: &str| (kid == "ka").then_some(&k);
        for i in 0..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] ^= 0x01;
            let flipped = String::from_utf8_lossy(&bytes).into_owned();
            assert!(verify(&flipped, &a, 500, ring).is_err(), "flip at {i}");
        }
        for cut in [1, 5, token.len() / 2] {
            assert!(verify(&token[..token.len() - cut], &a, 500, ring).is_err());
        }
        Ok(())
    }

    #[test]
    fn an_unserializable_payload_is_an_error_not_an_empty_signature() {
        // JSON object keys must be strings: a map keyed by tuples fails.
        let unserializable: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        let k = key("ka", 1);
        assert!(matches!(
            sign_as(VERSION, &k, &unserializable),
            Err(CryptoError::Unserializable(_))
        ));
        assert!(sign_as(VERSION, &k, &claims(&IssuerId::generate())).is_ok());
    }
}
