//! Argon2id password hashing on a bounded pool.
//!
//! Hashing is deliberately expensive, so it runs on blocking threads behind a
//! semaphore sized to the machine: a burst of sign-ins queues here instead of
//! starving every other request of CPU.

use crate::CryptoError;
use argon2::{Algorithm, Argon2, Params, Version};
use argon2::{PasswordHash, PasswordHasher as _, PasswordVerifier as _};
use std::sync::Arc;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

/// Defaults are OWASP's Argon2id recommendation: 19 MiB, 2 passes, 1 lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

pub struct Verification {
    pub valid: bool,
    /// The stored hash used other parameters: re-hash with the current ones.
    pub needs_rehash: bool,
}

pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    dummy_hash: String,
}

fn argon(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_blocking(params: &Params, password: &[u8]) -> Result<String, CryptoError> {
    // The salt comes from our CSPRNG (not the crate's getrandom call), so the
    // hot path makes no system call per hash.
    let salt = crate::random_bytes::<16>();
    argon(params)
        .hash_password_with_salt(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| CryptoError::Hashing(e.to_string()))
}

/// One caller counted in the queue-depth gauge until dropped (also when the
/// caller gives up while waiting).
struct Waiting(metrics::Gauge);

impl Waiting {
    fn join(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl PasswordHasher {
    /// `max_parallel` bounds concurrent hashes; 0 means the number of cores.
    pub fn new(params: PasswordParams, max_parallel: usize) -> Result<Self, CryptoError> {
        // The output length is stated, not left to the default: parameters
        // read back from a stored hash always carry it, and comparing them
        // with `None` here made every successful sign-in re-hash and rewrite
        // the password (a second Argon2 run per sign-in).
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            Some(Params::DEFAULT_OUTPUT_LEN),
        )
        .map_err(|e| CryptoError::Hashing(e.to_string()))?;
        let max_parallel = if max_parallel == 0 {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(2)
        } else {
            max_parallel
        };
        let dummy_hash = hash_blocking(&params, &crate::random_bytes::<32>())?;
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(max_parallel)),
            dummy_hash,
        })
    }

    async fn on_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CryptoError> {
        use idm_core::metric::{ARGON2_DURATION, ARGON2_QUEUE_DEPTH};
        let queued = Waiting::join(metrics::gauge!(ARGON2_QUEUE_DEPTH.name));
        let permit = self.permits.acquire().await;
        drop(queued);
        let _permit = permit.map_err(|_| CryptoError::WorkerGone)?;
        let started = std::time::Instant::now();
        let done = tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| CryptoError::WorkerGone);
        metrics::histogram!(ARGON2_DURATION.name).record(started.elapsed().as_secs_f64());
        done
    }

    pub async fn hash(&self, password: &str) -> Result<String, CryptoError> {
        let params = self.params.clone();
        let password = Zeroizing::new(password.as_bytes().to_vec());
        self.on_pool(move || hash_blocking(&params, &password))
            .await?
    }

    /// Verifies against `stored`, or against a dummy hash when there is none,
    /// so an unknown user costs exactly what a wrong password costs.
    pub async fn verify(
        &self,
        stored: Option<&str>,
        password: &str,
    ) -> Result<Verification, CryptoError> {
        let known = stored.is_some();
        let phc = stored.unwrap_or(&self.dummy_hash).to_owned();
        let params = self.params.clone();
        let password = Zeroizing::new(password.as_bytes().to_vec());
        self.on_pool(move || {
            let parsed =
                PasswordHash::new(&phc).map_err(|e| CryptoError::Hashing(e.to_string()))?;
            let matches = argon(&params).verify_password(&password, &parsed).is_ok();
            let current = Params::try_from(&parsed).ok().is_some_and(|p| p == params)
                && parsed.algorithm == Algorithm::Argon2id.ident();
            Ok(Verification {
                valid: known && matches,
                needs_rehash: known && matches && !current,
            })
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordParams {
        PasswordParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_parameter_changes_ask_for_rehash() -> Result<(), CryptoError> {
        let hasher = PasswordHasher::new(cheap(), 1)?;
        let phc = hasher.hash("correct horse").await?;
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains("correct horse"));
        assert!(hasher.verify(Some(&phc), "correct horse").await?.valid);
        assert!(!hasher.verify(Some(&phc), "wrong horse").await?.valid);
        assert!(!hasher.verify(None, "correct horse").await?.valid);

        let stronger = PasswordHasher::new(
            PasswordParams {
                memory_kib: 2048,
                ..cheap()
            },
            1,
        )?;
        let v = stronger.verify(Some(&phc), "correct horse").await?;
        assert!(v.valid && v.needs_rehash);
        // Unchanged parameters: no rehash on every sign-in.
        let same = hasher.verify(Some(&phc), "correct horse").await?;
        assert!(same.valid && !same.needs_rehash);
        Ok(())
    }

    /// Hashes stored before the move from argon2 0.5 to 0.6 (written by 0.5.3
    /// with the OWASP defaults) still verify, and do not ask for a rehash.
    #[tokio::test]
    async fn hashes_written_by_argon2_0_5_still_verify() -> Result<(), CryptoError> {
        const STORED: &str = "$argon2id$v=19$m=19456,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg\
                              $rk2Mi3E4dgRMg0fHaYaptWVZRKqs//6b6k3/nntqGJk";
        let hasher = PasswordHasher::new(PasswordParams::default(), 1)?;
        let v = hasher.verify(Some(STORED), "correct horse").await?;
        assert!(v.valid);
        assert!(!v.needs_rehash);
        assert!(!hasher.verify(Some(STORED), "wrong horse").await?.valid);
        Ok(())
    }
}
