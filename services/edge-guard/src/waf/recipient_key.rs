//! The key of the keyed hashes that stand for recipients in Redis
//! (`EDGE_HASH_KEY`, the same on every replica so they share one budget per
//! inbox). A plain hash of an address is reversed by hashing a list of
//! addresses; an HMAC under a key Redis never holds is not.

use base64::Engine;
use std::sync::Arc;
use zeroize::Zeroizing;

#[derive(Clone)]
pub struct RecipientKey(Arc<Zeroizing<[u8; 32]>>);

impl RecipientKey {
    /// From base64 (standard alphabet) of 32 bytes.
    pub fn from_base64(encoded: &str) -> Result<Self, String> {
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| "not base64".to_owned())?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| "must be exactly 32 bytes".to_owned())?;
        Ok(Self(Arc::new(Zeroizing::new(key))))
    }

    /// A fresh random key: for configurations built in code (tests), which
    /// clone one config for every replica. `EDGE_HASH_KEY` is required.
    pub fn random() -> Self {
        Self(Arc::new(Zeroizing::new(idm_crypto::random_bytes::<32>())))
    }

    pub fn hash(&self, data: &str) -> String {
        hex::encode(idm_crypto::hmac_sha256(
            self.0.as_ref().as_ref(),
            data.as_bytes(),
        ))
    }
}

impl Default for RecipientKey {
    fn default() -> Self {
        Self::random()
    }
}

impl std::fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecipientKey(<redacted>)")
    }
}
