use idm_core::config::{ConfigError, Env, ServiceBasics};
use idm_core::Region;
use secrecy::{ExposeSecret, SecretString};

/// `USER_*` variables.
#[derive(Debug, Clone)]
pub struct Config {
    pub basics: ServiceBasics,
    pub database_url: SecretString,
    pub pool_size: usize,
    /// Base64 of 32 bytes; seals the per-issuer blind-index keys.
    pub master_key: SecretString,
    /// During a master-key rotation, the key before `master_key`: it only
    /// opens values sealed before the rotation (a re-seal pass moves them to
    /// the current key); remove it once `idm_sealed_rows_previous_key` is 0.
    pub master_key_previous: Option<SecretString>,
    /// Placement when neither the caller nor the country decides.
    pub default_region: Region,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("USER");
        let default_region = env.string("DEFAULT_REGION", "weur");
        Ok(Self {
            basics: ServiceBasics::from_env(&env, 8084)?,
            database_url: env.secret("DATABASE_URL")?,
            pool_size: env.parse("DB_POOL_SIZE", 16)?,
            master_key: env.secret("MASTER_KEY")?,
            master_key_previous: env.optional_secret("MASTER_KEY_PREVIOUS")?,
            default_region: Region::parse(&default_region).map_err(|e| ConfigError::Invalid {
                var: env.var_name("DEFAULT_REGION"),
                reason: e.message,
            })?,
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
}
