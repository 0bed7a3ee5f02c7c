use idm_core::config::{ConfigError, Env, ServiceBasics};
use secrecy::{ExposeSecret, SecretString};

/// `SESSION_*` variables.
#[derive(Debug, Clone)]
pub struct Config {
    pub basics: ServiceBasics,
    pub database_url: SecretString,
    pub pool_size: usize,
    /// Base64 of 32 bytes; seals the per-issuer session signing keys.
    pub master_key: SecretString,
    /// During a master-key rotation, the key before `master_key`: it only
    /// opens values sealed before the rotation (a re-seal pass moves them to
    /// the current key); remove it once `idm_sealed_rows_previous_key` is 0.
    pub master_key_previous: Option<SecretString>,
    /// Base64 of 32 bytes, shared with edge-guard only: seals signing keys
    /// on their way over the bus (`*_FILE` is read by `Env::secret`).
    pub key_transport_key: SecretString,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("SESSION");
        Ok(Self {
            basics: ServiceBasics::from_env(&env, 8083)?,
            database_url: env.secret("DATABASE_URL")?,
            pool_size: env.parse("DB_POOL_SIZE", 16)?,
            master_key: env.secret("MASTER_KEY")?,
            master_key_previous: env.optional_secret("MASTER_KEY_PREVIOUS")?,
            key_transport_key: env.secret("KEY_TRANSPORT_KEY")?,
        })
    }

    pub(crate) fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }

    pub(crate) fn master_key(&self) -> &str {
        self.master_key.expose_secret()
    }

    pub(crate) fn master_key_previous(&self) -> Option<&str> {
        self.master_key_previous.as_ref().map(|k| k.expose_secret())
    }

    pub(crate) fn key_transport_key(&self) -> &str {
        self.key_transport_key.expose_secret()
    }
}
