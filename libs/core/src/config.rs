//! Configuration from environment variables.
//!
//! Each service reads `<PREFIX>_<NAME>` (for example `EDGE_HTTP_ADDR`) and, for
//! settings every service shares, falls back to `IDM_<NAME>` so one
//! `IDM_NATS_URL` can serve a whole deployment. Hand-written rather than
//! `envy`/`figment` because every error must name the exact variable and
//! secrets must go straight into `SecretString`.

use secrecy::SecretString;
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required but not set")]
    Missing(String),
    #[error("{var} is invalid: {reason}")]
    Invalid { var: String, reason: String },
}

#[derive(Debug, Clone, Copy)]
pub struct Env {
    prefix: &'static str,
}

impl Env {
    pub const fn new(prefix: &'static str) -> Self {
        Self { prefix }
    }

    fn lookup(&self, name: &str) -> Option<(String, String)> {
        let own = format!("{}_{name}", self.prefix);
        if let Ok(v) = std::env::var(&own) {
            return Some((own, v));
        }
        let shared = format!("IDM_{name}");
        std::env::var(&shared).ok().map(|v| (shared, v))
    }

    pub fn var_name(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }

    pub fn string(&self, name: &str, default: &str) -> String {
        self.lookup(name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| default.to_owned())
    }

    pub fn optional(&self, name: &str) -> Option<String> {
        self.lookup(name).map(|(_, v)| v).filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.optional(name)
            .ok_or_else(|| ConfigError::Missing(self.var_name(name)))
    }

    pub fn secret(&self, name: &str) -> Result<SecretString, ConfigError> {
        self.required(name).map(SecretString::from)
    }

    pub fn parse<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        match self.lookup(name) {
            None => Ok(default),
            Some((var, raw)) => raw
                .trim()
                .parse()
                .map_err(|e: T::Err| ConfigError::Invalid {
                    var,
                    reason: e.to_string(),
                }),
        }
    }

    /// A comma-separated list; empty items are skipped.
    pub fn list<T>(&self, name: &str) -> Result<Vec<T>, ConfigError>
    where
        T: FromStr,
        T::Err: std::fmt::Display,
    {
        let Some((var, raw)) = self.lookup(name) else {
            return Ok(Vec::new());
        };
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|item| {
                item.parse().map_err(|e: T::Err| ConfigError::Invalid {
                    var: var.clone(),
                    reason: format!("'{item}': {e}"),
                })
            })
            .collect()
    }
}

/// What every service needs: where NATS is, the subject prefix, and the
/// address of its own health/metrics (and admin) HTTP listener.
#[derive(Debug, Clone)]
pub struct ServiceBasics {
    pub nats_url: String,
    pub subject_prefix: String,
    pub http_addr: std::net::SocketAddr,
    /// How long a NATS request waits for a reply before `upstream_unavailable`.
    pub request_timeout: std::time::Duration,
}

impl ServiceBasics {
    pub fn from_env(env: &Env, default_http_port: u16) -> Result<Self, ConfigError> {
        let subject_prefix = env.string("SUBJECT_PREFIX", "idm");
        if subject_prefix.is_empty()
            || !subject_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ConfigError::Invalid {
                var: env.var_name("SUBJECT_PREFIX"),
                reason: "use letters, digits, '-' and '_' only".into(),
            });
        }
        Ok(Self {
            nats_url: env.string("NATS_URL", "nats://127.0.0.1:4222"),
            subject_prefix,
            http_addr: env.parse(
                "HTTP_ADDR",
                std::net::SocketAddr::from(([127, 0, 0, 1], default_http_port)),
            )?,
            request_timeout: std::time::Duration::from_millis(
                env.parse("REQUEST_TIMEOUT_MS", 5_000u64)?,
            ),
        })
    }
}
