//! Refresh tokens: made here, stored only as their hash, and the successor of
//! a rotated one kept sealed in the store for the issuer's reuse leeway, so
//! that a retry of the same rotation gets the same successor back
//! (docs/SESSIONS.md).
//!
//! The successor is sealed under a key derived from one of the issuer's signing keys
//! (the current one when sealing), whose id leads the sealed value: whatever
//! rotates refresh tokens for the issuer (the edge, or the session service
//! for an edge that does not yet) holds the ring and so opens what the other
//! sealed, while the store, and a dump of it, opens nothing. Ring keys stay
//! in the ring for a day after they stop signing, far longer than a leeway,
//! so a retry across a key rotation still opens. After an emergency key
//! revocation the old keys are gone, and so is every session that could
//! need them: those sessions can no longer be refreshed at all.
//!
//! A value without the prefix was sealed under the session service's master
//! key by a release before this one ([`successor_kid`] is `None`).

use crate::session_token::RingKey;
use crate::{CryptoError, MasterKey};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use idm_core::proto::session::REFRESH_TOKEN_PREFIX;
use idm_core::proto::SecretText;
use idm_core::{IssuerId, Region};
use zeroize::Zeroizing;

/// A fresh refresh token for a session in `region` (which it names, so a
/// refresh is routed without a lookup), and the hash the store keeps.
pub fn generate(region: Region) -> (SecretText, String) {
    let token = format!(
        "{REFRESH_TOKEN_PREFIX}{region}_{}",
        crate::random_token::<32>()
    );
    let hash = hash(&token);
    (SecretText::new(token), hash)
}

/// What the store keeps of a refresh token and looks it up by.
pub fn hash(token: &str) -> String {
    crate::sha256_hex(token.as_bytes())
}

/// Leads every value sealed here: `rs1.<kid>.<base64 of nonce ‖ ciphertext>`.
const FORMAT: &str = "rs1";
/// Narrows a signing key to this one use; the derived key never signs.
const PURPOSE: &str = "idmesh/refresh-successor/v1";

/// Binds the sealed successor to its issuer and to the exact token it
/// succeeds, so it cannot be moved to another token's row or issuer.
fn aad(issuer: &IssuerId, predecessor_hash: &str) -> Vec<u8> {
    format!("{PURPOSE}|{issuer}|{predecessor_hash}").into_bytes()
}

fn sealing_key(key: &RingKey) -> MasterKey {
    MasterKey::from_key_bytes(&key.secret).derive_sealing_key(PURPOSE)
}

/// `successor` sealed under `key` (the issuer's current signing key) for the
/// token whose hash is `predecessor_hash`.
pub fn seal_successor(
    key: &RingKey,
    issuer: &IssuerId,
    predecessor_hash: &str,
    successor: &str,
) -> Result<String, CryptoError> {
    let sealed = sealing_key(key).seal(successor.as_bytes(), &aad(issuer, predecessor_hash))?;
    Ok(format!("{FORMAT}.{}.{}", key.kid, STANDARD.encode(sealed)))
}

/// The signing key a value was sealed under, or `None` for a value sealed by
/// the session service's master key before this format existed.
pub fn successor_kid(sealed: &str) -> Option<&str> {
    let rest = sealed.strip_prefix(FORMAT)?.strip_prefix('.')?;
    rest.split_once('.').map(|(kid, _)| kid)
}

/// Opens a value from [`seal_successor`] with `key`, the ring key its
/// [`successor_kid`] names;
/// any other key, issuer, predecessor or an altered value is `Unseal`.
pub fn open_successor(
    sealed: &str,
    key: &RingKey,
    issuer: &IssuerId,
    predecessor_hash: &str,
) -> Result<Zeroizing<String>, CryptoError> {
    let body = sealed
        .strip_prefix(FORMAT)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.split_once('.'))
        .filter(|(kid, _)| *kid == key.kid)
        .map(|(_, body)| body)
        .ok_or(CryptoError::Unseal)?;
    let bytes = STANDARD.decode(body).map_err(|_| CryptoError::Unseal)?;
    let opened = sealing_key(key).open(&bytes, &aad(issuer, predecessor_hash))?;
    let text = String::from_utf8(opened.to_vec()).map_err(|_| CryptoError::Unseal)?;
    Ok(Zeroizing::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_region_and_are_stored_as_their_hash() {
        let (token, stored) = generate(Region::Apac);
        let token = token.expose();
        assert_eq!(
            idm_core::proto::session::refresh_token_region(token),
            Some(Region::Apac)
        );
        assert_eq!(stored, hash(token));
        assert!(!stored.contains(token));
        assert_ne!(generate(Region::Apac).1, stored);
    }

    fn key(kid: &str, byte: u8) -> RingKey {
        RingKey {
            kid: kid.into(),
            secret: Zeroizing::new([byte; 32]),
        }
    }

    #[test]
    fn a_successor_opens_only_with_its_key_issuer_and_predecessor() -> Result<(), CryptoError> {
        let issuer = IssuerId::generate();
        let k1 = key("k1", 1);
        let successor = "idmrt_weur_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let sealed = seal_successor(&k1, &issuer, "hash-a", successor)?;
        assert_eq!(successor_kid(&sealed), Some("k1"));
        assert!(!sealed.contains("idmrt_"), "the successor is not readable");
        assert_eq!(
            open_successor(&sealed, &k1, &issuer, "hash-a")?.as_str(),
            successor
        );

        // Another key (also one claiming the same kid), issuer or predecessor.
        assert!(open_successor(&sealed, &key("k1", 2), &issuer, "hash-a").is_err());
        assert!(open_successor(&sealed, &key("k2", 1), &issuer, "hash-a").is_err());
        assert!(open_successor(&sealed, &k1, &IssuerId::generate(), "hash-a").is_err());
        assert!(open_successor(&sealed, &k1, &issuer, "hash-b").is_err());
        // Altered in the store.
        let mut altered = sealed.clone().into_bytes();
        if let Some(last) = altered.iter_mut().rev().nth(3) {
            *last = if *last == b'A' { b'B' } else { b'A' };
        }
        let altered = String::from_utf8(altered).unwrap_or_default();
        assert!(open_successor(&altered, &k1, &issuer, "hash-a").is_err());
        // Every seal is fresh (random nonce).
        assert_ne!(seal_successor(&k1, &issuer, "hash-a", successor)?, sealed);
        Ok(())
    }

    #[test]
    fn values_sealed_before_the_format_name_no_key() {
        // The session service's master-key form: base64 of `idk1 ‖ …`.
        assert_eq!(successor_kid("aWRrMQAAAAAAAAAAAAAAAAAAAAAAAAAA"), None);
        assert_eq!(successor_kid(""), None);
        assert_eq!(successor_kid("rs1."), None);
        assert_eq!(successor_kid("rs1.k1"), None);
        assert_eq!(successor_kid("rs2.k1.AAAA"), None);
        assert!(open_successor("rs1.k1", &key("k1", 1), &IssuerId::generate(), "h").is_err());
    }
}
