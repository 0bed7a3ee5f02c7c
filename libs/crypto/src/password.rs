//! Argon2id password hashing on a bounded, fair pool.
//!
//! Hashing is deliberately expensive, so it runs on blocking threads behind
//! a gate sized to the machine, with a bounded queue shared fairly between
//! tenants (see `idm_core::fair_share`): a burst of sign-ins from one issuer
//! waits for at most its share of workers and queue slots, past which it is
//! refused at once ([`CryptoError::Overloaded`]), so it cannot starve the
//! other issuers or grow a queue without bound.

use crate::CryptoError;
use argon2::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use idm_core::fair_share::{FairShare, Slot};
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
    pool: FairShare,
    dummy_hash: String,
}

/// A hashing worker held for one tenant: what [`PasswordHasher::slot`]
/// returns. Several computations may run on it one after the other (a
/// verification and then a rehash).
pub struct HashSlot<'a> {
    hasher: &'a PasswordHasher,
    _slot: Slot,
}

fn argon(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

thread_local! {
    /// The Argon2 memory (19 MiB with the defaults) of the hashing thread,
    /// kept between hashes: allocating it per hash cost a fresh mapping,
    /// one page fault per 4 KiB page and the kernel's zeroing of it every
    /// time (profiles of sign-in showed page faults and `memset` next to
    /// Argon2 itself). At most one per blocking thread that has hashed, and
    /// the pool bounds how many hash at once; a thread's memory is freed
    /// with the thread when tokio retires it after it idles.
    static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `argon` over `password` and `salt` into `out`, on this thread's memory,
/// which is wiped afterwards: its blocks are cheap functions of the
/// password (the first ones test a guess without the memory-hard work), so
/// they must not outlive the hash any more than the password does.
fn argon2_into(
    argon: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), CryptoError> {
    use zeroize::Zeroize as _;
    MEMORY.with_borrow_mut(|memory| {
        let needed = argon.params().block_count();
        if memory.len() != needed {
            memory.resize(needed, Block::new());
        }
        let done = argon
            .hash_password_into_with_memory(password, salt, out, &mut memory[..])
            .map_err(|e| CryptoError::Hashing(e.to_string()));
        memory.iter_mut().for_each(Block::zeroize);
        done
    })
}

fn hash_blocking(params: &Params, password: &[u8]) -> Result<String, CryptoError> {
    // The salt comes from our CSPRNG (not the crate's getrandom call), so the
    // hot path makes no system call per hash.
    use argon2::password_hash::phc::{Output, ParamsString, Salt};
    let salt = crate::random_bytes::<16>();
    let fail = |e: &dyn std::fmt::Display| CryptoError::Hashing(e.to_string());
    let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    argon2_into(&argon(params), password, &salt, &mut out)?;
    // The PHC string `hash_password_with_salt` writes, from our own run.
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params).map_err(|e| fail(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| fail(&e))?),
        hash: Some(Output::new(&out).map_err(|e| fail(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `parsed` (with its own
/// algorithm, version and parameters), decided as argon2's
/// `verify_password` decides it, but on this thread's memory: anything that
/// cannot be checked (no salt, another algorithm) does not match.
fn matches(parsed: &PasswordHash, password: &[u8]) -> bool {
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(parsed.algorithm.as_str()) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(parsed) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    argon2_into(
        &Argon2::new(algorithm, version, params),
        password,
        salt.as_ref(),
        &mut out,
    )
    .is_ok()
        && crate::ct_eq(&out, expected.as_bytes())
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

/// Queue slots per worker when no queue length is configured.
pub const DEFAULT_QUEUE_PER_WORKER: usize = 4;

impl PasswordHasher {
    /// `max_parallel` bounds concurrent hashes (0 means the number of
    /// cores); [`DEFAULT_QUEUE_PER_WORKER`] times as many may wait.
    pub fn new(params: PasswordParams, max_parallel: usize) -> Result<Self, CryptoError> {
        Self::with_queue(params, max_parallel, None)
    }

    /// As [`PasswordHasher::new`], with `queue` waiting slots in all.
    pub fn with_queue(
        params: PasswordParams,
        max_parallel: usize,
        queue: Option<usize>,
    ) -> Result<Self, CryptoError> {
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
        let queue = queue.unwrap_or(max_parallel * DEFAULT_QUEUE_PER_WORKER);
        let dummy_hash = hash_blocking(&params, &crate::random_bytes::<32>())?;
        // That ran on the caller's thread (a runtime worker, or main), which
        // would otherwise keep the Argon2 memory for the life of the process.
        MEMORY.with_borrow_mut(|memory| *memory = Vec::new());
        Ok(Self {
            params,
            pool: FairShare::new(max_parallel, queue),
            dummy_hash,
        })
    }

    /// The fair-share gate in front of the workers (for gauges and tests).
    pub fn pool(&self) -> &FairShare {
        &self.pool
    }

    /// A worker for `tenant`, within its fair share of workers and queue
    /// slots; `Overloaded` at once past it. Take it before any other scarce
    /// resource (a database connection) so the two are always taken in the
    /// same order, and before looking anything up, so whether a request is
    /// refused says nothing about the account it names.
    pub async fn slot(&self, tenant: &str) -> Result<HashSlot<'_>, CryptoError> {
        use idm_core::metric::{ARGON2_QUEUE_DEPTH, STORE_SHED};
        let queued = Waiting::join(metrics::gauge!(ARGON2_QUEUE_DEPTH.name));
        let entered = self.pool.enter(tenant).await;
        drop(queued);
        match entered {
            Ok(slot) => Ok(HashSlot {
                hasher: self,
                _slot: slot,
            }),
            Err(refused) => {
                metrics::counter!(STORE_SHED.name, "resource" => "argon2").increment(1);
                Err(CryptoError::Overloaded {
                    retry_after: refused.retry_after,
                })
            }
        }
    }

    /// Hashes on a worker of `tenant`'s share.
    pub async fn hash(&self, tenant: &str, password: &str) -> Result<String, CryptoError> {
        self.slot(tenant).await?.hash(password).await
    }

    /// Verifies on a worker of `tenant`'s share (see [`HashSlot::verify`]).
    pub async fn verify(
        &self,
        tenant: &str,
        stored: Option<&str>,
        password: &str,
    ) -> Result<Verification, CryptoError> {
        self.slot(tenant).await?.verify(stored, password).await
    }
}

impl HashSlot<'_> {
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CryptoError> {
        let started = std::time::Instant::now();
        let done = tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| CryptoError::WorkerGone);
        metrics::histogram!(idm_core::metric::ARGON2_DURATION.name)
            .record(started.elapsed().as_secs_f64());
        done
    }

    pub async fn hash(&self, password: &str) -> Result<String, CryptoError> {
        let params = self.hasher.params.clone();
        let password = Zeroizing::new(password.as_bytes().to_vec());
        self.run(move || hash_blocking(&params, &password)).await?
    }

    /// Verifies against `stored`, or against a dummy hash when there is none,
    /// so an unknown user costs exactly what a wrong password costs.
    pub async fn verify(
        &self,
        stored: Option<&str>,
        password: &str,
    ) -> Result<Verification, CryptoError> {
        let known = stored.is_some();
        let phc = stored.unwrap_or(&self.hasher.dummy_hash).to_owned();
        let params = self.hasher.params.clone();
        let password = Zeroizing::new(password.as_bytes().to_vec());
        self.run(move || {
            let parsed =
                PasswordHash::new(&phc).map_err(|e| CryptoError::Hashing(e.to_string()))?;
            let matches = matches(&parsed, &password);
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
        let phc = hasher.hash("iss_a", "correct horse").await?;
        assert!(phc.starts_with("$argon2id$"));
        assert!(!phc.contains("correct horse"));
        assert!(
            hasher
                .verify("iss_a", Some(&phc), "correct horse")
                .await?
                .valid
        );
        assert!(
            !hasher
                .verify("iss_a", Some(&phc), "wrong horse")
                .await?
                .valid
        );
        assert!(!hasher.verify("iss_a", None, "correct horse").await?.valid);

        let stronger = PasswordHasher::new(
            PasswordParams {
                memory_kib: 2048,
                ..cheap()
            },
            1,
        )?;
        let v = stronger
            .verify("iss_a", Some(&phc), "correct horse")
            .await?;
        assert!(v.valid && v.needs_rehash);
        // Unchanged parameters: no rehash on every sign-in.
        let same = hasher.verify("iss_a", Some(&phc), "correct horse").await?;
        assert!(same.valid && !same.needs_rehash);
        Ok(())
    }

    /// Hashes and checks run on the thread's reused memory: what they write
    /// and decide must be what argon2's own hasher and verifier would.
    #[tokio::test]
    async fn reused_memory_agrees_with_argon2s_own_hash_and_verify() -> Result<(), CryptoError> {
        use argon2::PasswordVerifier as _;
        let params = PasswordParams::default();
        let hasher = PasswordHasher::new(params, 1)?;
        let ours = hasher.hash("iss_a", "correct horse").await?;
        let parsed = PasswordHash::new(&ours).map_err(|e| CryptoError::Hashing(e.to_string()))?;
        let theirs = argon(&hasher.params);
        assert!(theirs.verify_password(b"correct horse", &parsed).is_ok());
        assert!(theirs.verify_password(b"wrong horse", &parsed).is_err());
        // The same salt through argon2's own hasher gives the same string.
        let salt = parsed
            .salt
            .as_ref()
            .map(|s| s.as_ref().to_vec())
            .unwrap_or_default();
        let direct = {
            use argon2::PasswordHasher as _;
            theirs
                .hash_password_with_salt(b"correct horse", &salt)
                .map_err(|e| CryptoError::Hashing(e.to_string()))?
                .to_string()
        };
        assert_eq!(ours, direct);
        // Twice in a row on the same memory, and after a smaller hash.
        let small = PasswordHasher::new(cheap(), 1)?;
        let _ = small.hash("iss_a", "x").await?;
        for _ in 0..2 {
            assert!(
                hasher
                    .verify("iss_a", Some(&ours), "correct horse")
                    .await?
                    .valid
            );
            assert!(
                !hasher
                    .verify("iss_a", Some(&ours), "wrong horse")
                    .await?
                    .valid
            );
        }
        Ok(())
    }

    /// Hashes stored before the move from argon2 0.5 to 0.6 (written by 0.5.3
    /// with the OWASP defaults) still verify, and do not ask for a rehash.
    #[tokio::test]
    async fn hashes_written_by_argon2_0_5_still_verify() -> Result<(), CryptoError> {
        const STORED: &str = "$argon2id$v=19$m=19456,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg\
                              $rk2Mi3E4dgRMg0fHaYaptWVZRKqs//6b6k3/nntqGJk";
        let hasher = PasswordHasher::new(PasswordParams::default(), 1)?;
        let v = hasher
            .verify("iss_a", Some(STORED), "correct horse")
            .await?;
        assert!(v.valid);
        assert!(!v.needs_rehash);
        assert!(
            !hasher
                .verify("iss_a", Some(STORED), "wrong horse")
                .await?
                .valid
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_tenant_past_its_share_of_the_pool_is_refused_at_once() -> Result<(), CryptoError> {
        // One worker and one queue slot: a tenant alone may hold both.
        let hasher = PasswordHasher::with_queue(cheap(), 1, Some(1))?;
        let running = hasher.slot("iss_c").await?;
        let mut queued = Box::pin(hasher.slot("iss_c"));
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(std::future::Future::poll(queued.as_mut(), &mut cx).is_pending());
        assert!(matches!(
            hasher.slot("iss_c").await,
            Err(CryptoError::Overloaded { .. })
        ));
        drop(running);
        assert!(queued.await?.verify(None, "x").await.is_ok());
        Ok(())
    }
}
