//! Cryptography for idmesh, built on RustCrypto crates: randomness from the OS
//! CSPRNG, hashing, constant-time comparison, AEAD for secrets at rest,
//! Argon2id passwords on a bounded worker pool, and session token signing.

pub mod aead;
pub mod key_transport;
pub mod keyring;
pub mod password;
pub mod refresh_token;
pub mod session_token;

use hmac::{Hmac, KeyInit, Mac};
use rand::Rng as _;
use sha2::{Digest, Sha256};

pub use aead::MasterKey;
pub use key_transport::KeyTransport;
pub use keyring::{MasterKeys, Which};
pub use password::{HashSlot, PasswordHasher, PasswordParams};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("master key must be base64 of exactly 32 bytes")]
    BadMasterKey,
    #[error("sealed data could not be opened")]
    Unseal,
    /// Neither the current nor the previous master key opens a sealed
    /// value: the master key was changed without the old one given as
    /// `<P>_MASTER_KEY_PREVIOUS`, or the value was altered.
    #[error("sealed data opens with neither the current nor the previous master key (was the master key changed without setting the old one as <P>_MASTER_KEY_PREVIOUS?)")]
    NoMasterKeyOpens,
    #[error("the previous master key is the current one")]
    PreviousIsCurrent,
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("password worker pool is gone")]
    WorkerGone,
    /// The tenant already holds its share of the hashing pool: shed, not
    /// queued (`503 overloaded` with `Retry-After`).
    #[error("the password hashing pool is busy; retry in {retry_after:?}")]
    Overloaded { retry_after: std::time::Duration },
    #[error("a payload to sign could not be serialized: {0}")]
    Unserializable(String),
}

/// `N` bytes from a CSPRNG seeded by the operating system.
///
/// `rand::rng()` is a thread-local ChaCha12 generator seeded from the OS and
/// reseeded from it every 64 KiB of output (`rand` marks it `CryptoRng`): as
/// unpredictable as the OS source for keys, tokens, nonces and salts, without
/// a `getrandom` system call on every request, which profiles of session
/// verification showed on its hot path. The process never forks, so two
/// processes cannot share a state.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rng().fill_bytes(&mut out);
    out
}

/// An opaque URL-safe token carrying `N` random bytes.
pub fn random_token<const N: usize>() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<N>())
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}

pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0u8; 32],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Constant-time equality for secrets, codes and signatures.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A fresh API key and the hash that is the only thing stored.
pub fn new_api_key(kind: idm_core::KeyKind, mode: idm_core::KeyMode) -> (idm_core::ApiKey, String) {
    let key = idm_core::ApiKey::from_random(
        kind,
        mode,
        &random_bytes::<{ idm_core::api_key::RANDOM_BYTES }>(),
    );
    let hash = api_key_hash(&key);
    (key, hash)
}

pub fn api_key_hash(key: &idm_core::ApiKey) -> String {
    sha256_hex(key.expose().as_bytes())
}

/// A uniformly random decimal code of `digits` digits (rejection sampling, so
/// no digit is likelier than another).
pub fn random_digits(digits: u32) -> String {
    let modulus = 10u64.pow(digits.min(18));
    let limit = u64::MAX - (u64::MAX % modulus);
    loop {
        let value = u64::from_le_bytes(random_bytes::<8>());
        if value < limit {
            return format!("{:0width$}", value % modulus, width = digits as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn random_values_differ_and_ct_eq_checks_length() {
        assert_ne!(random_bytes::<32>(), random_bytes::<32>());
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"abcd"));
    }

    #[test]
    fn random_digits_are_fixed_width_decimal() {
        for _ in 0..200 {
            let code = random_digits(6);
            assert_eq!(code.len(), 6);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn new_keys_parse_and_hash_stably() {
        let (key, hash) = new_api_key(idm_core::KeyKind::Restricted, idm_core::KeyMode::Test);
        let reparsed = idm_core::ApiKey::parse(key.expose());
        assert_eq!(reparsed.map(|k| api_key_hash(&k)).ok(), Some(hash));
    }
}
