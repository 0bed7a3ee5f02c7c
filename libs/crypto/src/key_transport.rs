//! Session signing keys on their way from the session service to edge-guard.
//!
//! The bus is not trusted with them: each key travels sealed
//! (XChaCha20-Poly1305) under a transport key that only the session service
//! and the edges hold (`SESSION_KEY_TRANSPORT_KEY` / `EDGE_KEY_TRANSPORT_KEY`,
//! never the session master key, which opens every key at rest). The
//! associated data binds each sealed key to its issuer, its key id and the
//! nonce the edge chose for this one fetch, so a sealed key cannot be passed
//! off as another issuer's or another kid's, and a recorded reply cannot be
//! replayed to an edge later (for example to bring back a revoked key).

use crate::session_token::RingKey;
use crate::{CryptoError, MasterKey};
use idm_core::IssuerId;
use zeroize::Zeroizing;

/// The purpose the configured transport key is narrowed to, so the same
/// configured value could later serve another transport without key reuse.
const PURPOSE: &str = "idmesh/session-key-transport/v1";
/// Random bytes in a fetch nonce (sent as base64url).
pub const NONCE_BYTES: usize = 16;

pub struct KeyTransport {
    key: MasterKey,
}

fn aad(issuer: &IssuerId, kid: &str, nonce: &str) -> Vec<u8> {
    format!("{PURPOSE}|{issuer}|{kid}|{nonce}").into_bytes()
}

/// A fresh fetch nonce: what the edge sends with its key-ring request.
pub fn new_nonce() -> String {
    crate::random_token::<NONCE_BYTES>()
}

/// Whether `nonce` looks like one from [`new_nonce`] (so a caller cannot make
/// every reply share one nonce by sending an empty or constant one cheaply).
pub fn nonce_is_well_formed(nonce: &str) -> bool {
    nonce.len() >= 22
        && nonce.len() <= 64
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl KeyTransport {
    /// From base64 (standard alphabet) of 32 bytes, as given in config.
    pub fn from_base64(encoded: &str) -> Result<Self, CryptoError> {
        let configured = MasterKey::from_base64(encoded)?;
        Ok(Self {
            key: configured.derive_sealing_key(PURPOSE),
        })
    }

    /// `nonce ‖ ciphertext` of `key`'s secret, bound to issuer, kid and the
    /// fetch nonce.
    pub fn seal(
        &self,
        issuer: &IssuerId,
        key: &RingKey,
        fetch_nonce: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        self.key
            .seal(key.secret.as_ref(), &aad(issuer, &key.kid, fetch_nonce))
    }

    /// The key sealed by [`seal`](Self::seal) for exactly this issuer, kid and
    /// fetch nonce; anything else is `Unseal`.
    pub fn open(
        &self,
        issuer: &IssuerId,
        kid: &str,
        fetch_nonce: &str,
        sealed: &[u8],
    ) -> Result<RingKey, CryptoError> {
        let opened = self.key.open(sealed, &aad(issuer, kid, fetch_nonce))?;
        let secret: [u8; 32] = opened
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Unseal)?;
        Ok(RingKey {
            kid: kid.to_owned(),
            secret: Zeroizing::new(secret),
        })
    }
}

impl std::fmt::Debug for KeyTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyTransport(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(byte: u8) -> KeyTransport {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
        match KeyTransport::from_base64(&encoded) {
            Ok(t) => t,
            Err(e) => unreachable!("valid key: {e}"),
        }
    }

    #[test]
    fn a_sealed_key_opens_only_for_its_issuer_kid_nonce_and_transport_key() {
        let t = transport(7);
        let issuer = IssuerId::generate();
        let key = RingKey {
            kid: "k1".into(),
            secret: Zeroizing::new([42; 32]),
        };
        let nonce = new_nonce();
        assert!(nonce_is_well_formed(&nonce));
        let sealed = t.seal(&issuer, &key, &nonce).unwrap_or_default();
        // The sealed form does not carry the secret.
        assert!(!sealed.windows(32).any(|w| w == [42; 32]));
        let opened = t.open(&issuer, "k1", &nonce, &sealed);
        assert_eq!(opened.map(|k| *k.secret).ok(), Some([42; 32]));
        assert!(t
            .open(&IssuerId::generate(), "k1", &nonce, &sealed)
            .is_err());
        assert!(t.open(&issuer, "k2", &nonce, &sealed).is_err());
        assert!(t.open(&issuer, "k1", &new_nonce(), &sealed).is_err());
        assert!(transport(8).open(&issuer, "k1", &nonce, &sealed).is_err());
        assert!(!nonce_is_well_formed(""));
        assert!(!nonce_is_well_formed("short"));
        assert!(!nonce_is_well_formed(&"a.".repeat(20)));
    }
}
