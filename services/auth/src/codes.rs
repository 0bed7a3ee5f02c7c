//! One-time artefacts in Redis: magic links, email codes, MFA tokens and
//! verification codes. Keys hold keyed hashes (HMAC under a key derived from
//! the master key), never addresses or codes, so a copy of Redis cannot be
//! matched against a list of addresses; values hold a MAC of the code (keyed
//! the same way), the expiry, an attempt counter and a payload that is never
//! an address in the clear. Every entry also has a Redis TTL so it is erased
//! on its own once it expires.
//!
//! During a master-key rotation both keys' derivations are held: new
//! entries are written under the current key; an attempt looks the entry up
//! under the current key, then the previous one, and checks its MAC and
//! address tag under the key it was found under, so codes sent before the
//! restart still verify (they expire within minutes, so nothing is moved).
//!
//! Use is single: `consume` deletes the entry only if it still holds the
//! expected MAC, so of two concurrent correct uses exactly one succeeds.

use idm_cache::Connection;
use idm_core::clock::Clock;
use idm_core::{ApiError, ErrorCode, IssuerId};
use std::time::Duration;

/// What kind of artefact a key belongs to (part of the key).
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    MagicLink,
    EmailCode,
    MfaToken,
    Verification,
    /// Users (issue 11): a password reset, keyed by its code.
    PasswordReset,
    /// Users (issue 11): an address change, keyed by its code.
    EmailChange,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::MagicLink => "magic",
            Kind::EmailCode => "emailcode",
            Kind::MfaToken => "mfa",
            Kind::Verification => "verify",
            Kind::PasswordReset => "pwreset",
            Kind::EmailChange => "emailchange",
        }
    }
}

/// A stored artefact, as read at an attempt.
pub struct Entry {
    pub mac: Vec<u8>,
    pub payload: String,
    /// The master key it was written under (0: current, 1: previous).
    generation: usize,
    /// Its Redis key.
    key: String,
}

pub struct Codes {
    redis: Connection,
    prefix: String,
    /// Current first, then the previous master key's, during a rotation.
    mac_keys: Vec<zeroize::Zeroizing<[u8; 32]>>,
    key_keys: Vec<zeroize::Zeroizing<[u8; 32]>>,
    clock: Clock,
}

// Reads the entry and counts the attempt in one step.
const ATTEMPT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
local n = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return {n, redis.call('HGET', KEYS[1], 'mac'), redis.call('HGET', KEYS[1], 'payload'), redis.call('HGET', KEYS[1], 'expires')}
";

// Deletes the entry only if it still holds this MAC: single use under races.
const CONSUME: &str = r"
if redis.call('HGET', KEYS[1], 'mac') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

pub fn invalid() -> ApiError {
    ApiError::new(ErrorCode::CodeInvalid, "the code is not valid")
}

impl Codes {
    pub fn new(
        redis: Connection,
        prefix: String,
        master: &idm_crypto::MasterKeys,
        clock: Clock,
    ) -> Self {
        Self {
            redis,
            prefix,
            mac_keys: master.derive_all("idmesh/auth/code-mac/v1"),
            key_keys: master.derive_all("idmesh/auth/code-key/v1"),
            clock,
        }
    }

    fn key_key(&self, generation: usize) -> &[u8] {
        self.key_keys
            .get(generation)
            .or(self.key_keys.first())
            .map_or(&[][..], |k| k.as_ref())
    }

    fn mac_key(&self, generation: usize) -> &[u8] {
        self.mac_keys
            .get(generation)
            .or(self.mac_keys.first())
            .map_or(&[][..], |k| k.as_ref())
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn key(&self, kind: Kind, issuer: &IssuerId, subject: &str) -> String {
        self.key_under(0, kind, issuer, subject)
    }

    fn key_under(&self, generation: usize, kind: Kind, issuer: &IssuerId, subject: &str) -> String {
        let hash = idm_crypto::hmac_sha256(
            self.key_key(generation),
            format!("{}\u{0}{subject}", kind.tag()).as_bytes(),
        );
        format!(
            "{}{}:{}:{}",
            self.prefix,
            kind.tag(),
            issuer,
            hex::encode(hash)
        )
    }

    /// A keyed hash standing for an address inside a stored value, so the
    /// address can be checked when presented again without being kept.
    pub fn address_tag(&self, issuer: &IssuerId, email: &idm_core::Email) -> String {
        self.address_tag_under(0, issuer, email)
    }

    /// The address tag under the key `entry` was written with.
    pub fn address_tag_of(
        &self,
        entry: &Entry,
        issuer: &IssuerId,
        email: &idm_core::Email,
    ) -> String {
        self.address_tag_under(entry.generation, issuer, email)
    }

    fn address_tag_under(
        &self,
        generation: usize,
        issuer: &IssuerId,
        email: &idm_core::Email,
    ) -> String {
        hex::encode(idm_crypto::hmac_sha256(
            self.key_key(generation),
            format!("address\u{0}{issuer}\u{0}{}", email.canonical()).as_bytes(),
        ))
    }

    /// `true` the first time it is asked for (`purpose`, `subject`) within
    /// `window`: at most one of some message per subject and window (the
    /// key is a keyed hash; losing Redis only lets one more through, and
    /// so does a master-key rotation, which starts the windows again).
    pub async fn first_within(
        &self,
        purpose: &str,
        issuer: &IssuerId,
        subject: &str,
        window: Duration,
    ) -> Result<bool, ApiError> {
        let hash = idm_crypto::hmac_sha256(
            self.key_key(0),
            format!("once\u{0}{purpose}\u{0}{issuer}\u{0}{subject}").as_bytes(),
        );
        let key = format!(
            "{}once:{purpose}:{issuer}:{}",
            self.prefix,
            hex::encode(hash)
        );
        let mut redis = self.redis.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(window.as_secs().max(1))
            .query_async(&mut redis)
            .await
            .map_err(|e| ApiError::upstream(format!("code store unavailable: {e}")))?;
        Ok(set.is_some())
    }

    /// The MAC of `code`, bound to its subject so a code cannot be moved.
    pub fn mac(&self, subject: &str, code: &str) -> Vec<u8> {
        self.mac_under(0, subject, code)
    }

    /// The MAC of `code` under the key `entry` was written with: what its
    /// stored MAC is compared with.
    pub fn mac_of(&self, entry: &Entry, subject: &str, code: &str) -> Vec<u8> {
        self.mac_under(entry.generation, subject, code)
    }

    /// The MAC of `code` under every configured key, current first (for
    /// MACs kept elsewhere, such as backup-code hashes).
    pub fn macs(&self, subject: &str, code: &str) -> Vec<Vec<u8>> {
        (0..self.mac_keys.len())
            .map(|g| self.mac_under(g, subject, code))
            .collect()
    }

    fn mac_under(&self, generation: usize, subject: &str, code: &str) -> Vec<u8> {
        idm_crypto::hmac_sha256(
            self.mac_key(generation),
            format!("{subject}\u{0}{code}").as_bytes(),
        )
        .to_vec()
    }

    /// Stores an artefact for `subject`, replacing any earlier one, until `ttl`.
    pub async fn put(
        &self,
        kind: Kind,
        issuer: &IssuerId,
        subject: &str,
        code: &str,
        payload: &str,
        ttl: Duration,
    ) -> Result<(), ApiError> {
        self.put_bound(kind, issuer, subject, subject, code, payload, ttl)
            .await
    }

    /// `put`, with the code's MAC bound to `mac_subject` rather than to the
    /// key's subject (a verification code is bound to its id and address).
    #[allow(clippy::too_many_arguments)]
    pub async fn put_bound(
        &self,
        kind: Kind,
        issuer: &IssuerId,
        subject: &str,
        mac_subject: &str,
        code: &str,
        payload: &str,
        ttl: Duration,
    ) -> Result<(), ApiError> {
        let key = self.key(kind, issuer, subject);
        let expires = self.clock.unix() + ttl.as_secs() as i64;
        let mut redis = self.redis.clone();
        redis::pipe()
            .atomic()
            .del(&key)
            .ignore()
            .hset_multiple(
                &key,
                &[
                    ("mac", self.mac(mac_subject, code)),
                    ("payload", payload.as_bytes().to_vec()),
                    ("expires", expires.to_string().into_bytes()),
                ],
            )
            .ignore()
            .hset(&key, "attempts", 0)
            .ignore()
            .expire(&key, ttl.as_secs() as i64)
            .ignore()
            .query_async::<()>(&mut redis)
            .await
            .map_err(|e| ApiError::upstream(format!("code store unavailable: {e}")))
    }

    /// Erases every pending second-factor sign-in of `issuer` whose payload
    /// names `user` (a user being deleted): how many. A scan of the
    /// issuer's few short-lived MFA entries, not of the whole store.
    pub async fn forget_user(&self, issuer: &IssuerId, user: &str) -> Result<i64, ApiError> {
        let down =
            |e: redis::RedisError| ApiError::upstream(format!("code store unavailable: {e}"));
        let mut redis = self.redis.clone();
        let pattern = format!("{}{}:{}:*", self.prefix, Kind::MfaToken.tag(), issuer);
        let keys = redis.scan_all(&pattern).await.map_err(down)?;
        let mut erased = 0;
        for key in keys {
            let payload: Option<Vec<u8>> = redis::cmd("HGET")
                .arg(&key)
                .arg("payload")
                .query_async(&mut redis)
                .await
                .map_err(down)?;
            if payload.is_some_and(|p| String::from_utf8_lossy(&p).contains(user)) {
                let n: i64 = redis::cmd("DEL")
                    .arg(&key)
                    .query_async(&mut redis)
                    .await
                    .map_err(down)?;
                erased += n;
            }
        }
        Ok(erased)
    }

    /// Counts one attempt at `subject` and returns the entry, or why not:
    /// absent (`code_invalid`), past its expiry (`code_expired`, erased), or
    /// out of attempts (`too_many_attempts`, erased: the code is dead).
    pub async fn attempt(
        &self,
        kind: Kind,
        issuer: &IssuerId,
        subject: &str,
        max_attempts: u32,
    ) -> Result<Entry, ApiError> {
        let mut redis = self.redis.clone();
        // Under the current key; during a rotation, then under the previous.
        let mut found = None;
        for generation in 0..self.key_keys.len() {
            let key = self.key_under(generation, kind, issuer, subject);
            let entry: Option<(i64, Vec<u8>, String, i64)> = redis::Script::new(ATTEMPT)
                .key(&key)
                .invoke_async(&mut redis)
                .await
                .map_err(|e| ApiError::upstream(format!("code store unavailable: {e}")))?;
            if let Some(entry) = entry {
                found = Some((generation, key, entry));
                break;
            }
        }
        let Some((generation, key, (attempts, mac, payload, expires))) = found else {
            return Err(invalid());
        };
        if self.clock.unix() >= expires {
            self.erase(&key).await;
            return Err(ApiError::new(
                ErrorCode::CodeExpired,
                "the code has expired",
            ));
        }
        if attempts > i64::from(max_attempts) {
            self.erase(&key).await;
            return Err(ApiError::new(
                ErrorCode::TooManyAttempts,
                "too many attempts: request a new code",
            ));
        }
        Ok(Entry {
            mac,
            payload,
            generation,
            key,
        })
    }

    /// Uses the entry up if it still holds `mac`. `false` when another use won.
    pub async fn consume(&self, entry: &Entry, mac: &[u8]) -> Result<bool, ApiError> {
        let mut redis = self.redis.clone();
        let deleted: i64 = redis::Script::new(CONSUME)
            .key(&entry.key)
            .arg(mac)
            .invoke_async(&mut redis)
            .await
            .map_err(|e| ApiError::upstream(format!("code store unavailable: {e}")))?;
        Ok(deleted == 1)
    }

    async fn erase(&self, key: &str) {
        let mut redis = self.redis.clone();
        if let Err(e) = redis::cmd("DEL")
            .arg(key)
            .query_async::<()>(&mut redis)
            .await
        {
            tracing::warn!(error = %e, "could not erase a one-time code");
        }
    }
}
