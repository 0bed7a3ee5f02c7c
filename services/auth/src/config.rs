use idm_core::config::{ConfigError, Env, ServiceBasics};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// `AUTH_*` variables.
#[derive(Debug, Clone)]
pub struct Config {
    pub basics: ServiceBasics,
    pub redis_url: SecretString,
    /// Failed sign-ins never answer sooner than this, so the failure paths
    /// (unknown user, wrong password) are indistinguishable by time.
    pub min_sign_in: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("AUTH");
        Ok(Self {
            basics: ServiceBasics::from_env(&env, 8082)?,
            redis_url: SecretString::from(env.string("REDIS_URL", "redis://127.0.0.1:6379")),
            min_sign_in: Duration::from_millis(env.parse("MIN_SIGN_IN_MS", 300u64)?),
        })
    }

    pub(crate) fn redis_url(&self) -> &str {
        self.redis_url.expose_secret()
    }
}
