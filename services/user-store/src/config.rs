use idm_core::config::{ConfigError, Env, ServiceBasics};
use idm_core::Region;
use idm_crypto::PasswordParams;
use secrecy::{ExposeSecret, SecretString};

/// `STORE_*` variables (shared ones may also come from `IDM_*`).
#[derive(Debug, Clone)]
pub struct Config {
    pub basics: ServiceBasics,
    pub region: Region,
    pub database_url: SecretString,
    pub pool_size: usize,
    pub password: PasswordParams,
    /// Concurrent Argon2 computations; 0 means one per core.
    pub max_parallel_hashes: usize,
    /// Password checks that may wait for a hashing worker, shared fairly
    /// between issuers (see `idm_core::fair_share`); 0 means four per worker.
    pub hash_queue: usize,
    /// Requests that may wait for a pooled connection, shared fairly between
    /// issuers like the connections themselves; 0 means eight per connection.
    pub db_queue: usize,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("STORE");
        let region = env.required("REGION")?;
        let region = Region::parse(&region).map_err(|e| ConfigError::Invalid {
            var: env.var_name("REGION"),
            reason: e.message,
        })?;
        let defaults = PasswordParams::default();
        Ok(Self {
            basics: ServiceBasics::from_env(&env, 8090)?,
            region,
            database_url: env.secret("DATABASE_URL")?,
            pool_size: env.parse("DB_POOL_SIZE", 16)?,
            password: PasswordParams {
                memory_kib: env.parse("ARGON2_MEMORY_KIB", defaults.memory_kib)?,
                iterations: env.parse("ARGON2_ITERATIONS", defaults.iterations)?,
                parallelism: env.parse("ARGON2_PARALLELISM", defaults.parallelism)?,
            },
            max_parallel_hashes: env.parse("MAX_PARALLEL_HASHES", 0)?,
            hash_queue: env.parse("HASH_QUEUE", 0)?,
            db_queue: env.parse("DB_QUEUE", 0)?,
        })
    }

    pub(crate) fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }
}
