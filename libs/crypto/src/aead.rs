//! Secrets at rest (session keys, blind-index keys, later TOTP and webhook
//! secrets) sealed with XChaCha20-Poly1305 under a master key given at start.
//! The associated data binds a ciphertext to its row, so a sealed value copied
//! to another issuer's row does not open.

use crate::CryptoError;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

const NONCE_LEN: usize = 24;

pub struct MasterKey {
    cipher: XChaCha20Poly1305,
    derivation: Zeroizing<[u8; 32]>,
}

impl MasterKey {
    /// From base64 (standard alphabet) of 32 bytes, as given in config.
    pub fn from_base64(encoded: &str) -> Result<Self, CryptoError> {
        use base64::Engine;
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| CryptoError::BadMasterKey)?,
        );
        if bytes.len() != 32 {
            return Err(CryptoError::BadMasterKey);
        }
        let cipher =
            XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| CryptoError::BadMasterKey)?;
        let derivation = Zeroizing::new(crate::hmac_sha256(
            &bytes,
            b"idmesh/master-key/derivation/v1",
        ));
        Ok(Self { cipher, derivation })
    }

    /// A 32-byte key for one named purpose (for example a MAC key), so the
    /// master key itself is only ever used for sealing.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(crate::hmac_sha256(
            self.derivation.as_ref(),
            purpose.as_bytes(),
        ))
    }

    /// A sealing key of its own for one named purpose (derived, so one
    /// configured master key can serve several uses without reusing a key).
    pub fn derive_sealing_key(&self, purpose: &str) -> Self {
        let bytes = self.derive(purpose);
        let derivation = Zeroizing::new(crate::hmac_sha256(
            bytes.as_ref(),
            b"idmesh/master-key/derivation/v1",
        ));
        // XChaCha20-Poly1305 takes any 32-byte key, so this cannot fail.
        let cipher = XChaCha20Poly1305::new(<&chacha20poly1305::Key>::from(&*bytes));
        Self { cipher, derivation }
    }

    /// `nonce ‖ ciphertext`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce_bytes = crate::random_bytes::<NONCE_LEN>();
        let nonce = <&XNonce>::from(&nonce_bytes);
        let sealed = self
            .cipher
            .encrypt(
                nonce,
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| CryptoError::Unseal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce_bytes);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Unseal);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = <&XNonce>::try_from(nonce).map_err(|_| CryptoError::Unseal)?;
        self.cipher
            .decrypt(nonce, Payload { msg: body, aad })
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Unseal)
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() {
        let key = MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
        let Ok(key) = key else {
            unreachable!("valid key")
        };
        let sealed = key.seal(b"secret", b"iss_a").unwrap_or_default();
        assert_eq!(
            key.open(&sealed, b"iss_a").map(|v| v.to_vec()).ok(),
            Some(b"secret".to_vec())
        );
        assert!(key.open(&sealed, b"iss_b").is_err());
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(key.open(&tampered, b"iss_a").is_err());
        assert!(MasterKey::from_base64("c2hvcnQ=").is_err());
    }
}
