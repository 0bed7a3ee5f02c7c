//! API keys: `ath_sec_{live,test}_…` (secret) and `rk_{live,test}_…`
//! (restricted). The body is base58 of 32 random bytes followed by a CRC-32
//! of prefix and random bytes, so a mistyped or made-up key is refused
//! without any lookup.

use crate::{ApiError, ErrorCode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Secret,
    Restricted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    Live,
    Test,
}

impl KeyMode {
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        match raw {
            "live" => Ok(KeyMode::Live),
            "test" => Ok(KeyMode::Test),
            _ => Err(ApiError::validation("mode must be 'live' or 'test'")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyMode::Live => "live",
            KeyMode::Test => "test",
        }
    }
}

pub const RANDOM_BYTES: usize = 32;
const CHECKSUM_BYTES: usize = 4;

fn prefix(kind: KeyKind, mode: KeyMode) -> &'static str {
    match (kind, mode) {
        (KeyKind::Secret, KeyMode::Live) => "ath_sec_live_",
        (KeyKind::Secret, KeyMode::Test) => "ath_sec_test_",
        (KeyKind::Restricted, KeyMode::Live) => "rk_live_",
        (KeyKind::Restricted, KeyMode::Test) => "rk_test_",
    }
}

fn checksum(prefix: &str, random: &[u8]) -> [u8; CHECKSUM_BYTES] {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(prefix.as_bytes());
    hasher.update(random);
    hasher.finalize().to_be_bytes()
}

/// A well-formed key. Whether it exists is a separate (hashed) lookup.
pub struct ApiKey {
    kind: KeyKind,
    mode: KeyMode,
    raw: SecretString,
}

impl ApiKey {
    /// Builds a key from fresh random bytes (which the caller draws from the
    /// OS CSPRNG).
    pub fn from_random(kind: KeyKind, mode: KeyMode, random: &[u8; RANDOM_BYTES]) -> Self {
        let prefix = prefix(kind, mode);
        let mut body = Vec::with_capacity(RANDOM_BYTES + CHECKSUM_BYTES);
        body.extend_from_slice(random);
        body.extend_from_slice(&checksum(prefix, random));
        let raw = format!("{prefix}{}", bs58::encode(&body).into_string());
        Self {
            kind,
            mode,
            raw: SecretString::from(raw),
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        let invalid = || ApiError::new(ErrorCode::InvalidApiKey, "the API key is not valid");
        if raw.len() > 128 {
            return Err(invalid());
        }
        let (kind, mode, body) = [
            (KeyKind::Secret, KeyMode::Live),
            (KeyKind::Secret, KeyMode::Test),
            (KeyKind::Restricted, KeyMode::Live),
            (KeyKind::Restricted, KeyMode::Test),
        ]
        .into_iter()
        .find_map(|(k, m)| raw.strip_prefix(prefix(k, m)).map(|body| (k, m, body)))
        .ok_or_else(invalid)?;
        let decoded = bs58::decode(body).into_vec().map_err(|_| invalid())?;
        if decoded.len() != RANDOM_BYTES + CHECKSUM_BYTES {
            return Err(invalid());
        }
        let (random, sum) = decoded.split_at(RANDOM_BYTES);
        if checksum(prefix(kind, mode), random) != sum {
            return Err(invalid());
        }
        Ok(Self {
            kind,
            mode,
            raw: SecretString::from(raw.to_owned()),
        })
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    pub fn mode(&self) -> KeyMode {
        self.mode
    }

    pub fn expose(&self) -> &str {
        self.raw.expose_secret()
    }

    /// A short, non-secret hint for listings ("ath_sec_live_…x7Qa").
    pub fn hint(&self) -> String {
        let raw = self.raw.expose_secret();
        let tail: String = raw
            .chars()
            .rev()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{}…{tail}", prefix(self.kind, self.mode))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({:?}, {:?}, <redacted>)", self.kind, self.mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_typos_do_not() {
        let key = ApiKey::from_random(KeyKind::Secret, KeyMode::Live, &[7u8; 32]);
        let raw = key.expose().to_owned();
        assert!(raw.starts_with("ath_sec_live_"));
        let parsed = ApiKey::parse(&raw).ok();
        assert_eq!(
            parsed.map(|k| (k.kind(), k.mode())),
            Some((KeyKind::Secret, KeyMode::Live))
        );

        // Flip one character of the body: the checksum catches it.
        let mut chars: Vec<char> = raw.chars().collect();
        let i = chars.len() - 10;
        chars[i] = if chars[i] == 'a' { 'b' } else { 'a' };
        let typo: String = chars.into_iter().collect();
        assert!(ApiKey::parse(&typo).is_err());

        // Same random part under another prefix: the checksum covers the prefix.
        let swapped = raw.replacen("ath_sec_live_", "ath_sec_test_", 1);
        assert!(ApiKey::parse(&swapped).is_err());
        assert!(ApiKey::parse("rk_live_").is_err());
        assert!(ApiKey::parse("nope").is_err());
        assert!(!format!("{key:?}").contains(&raw[14..]));
    }
}
