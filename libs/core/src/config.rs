//! Configuration from environment variables.
//!
//! Each service reads `<PREFIX>_<NAME>` (for example `EDGE_HTTP_ADDR`) and, for
//! settings every service shares, falls back to `IDM_<NAME>` so one
//! `IDM_NATS_URL` can serve a whole deployment. Hand-written rather than
//! `envy`/`figment` because every error must name the exact variable and
//! secrets must go straight into `SecretString`.
//!
//! Every secret may instead be given as a file: `<NAME>_FILE` names a file
//! whose content (trimmed) is the secret, as Docker and Kubernetes secrets
//! are mounted. Setting both `<NAME>` and `<NAME>_FILE` is an error.

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

    /// A required secret, from `<NAME>` or the file named by `<NAME>_FILE`.
    pub fn secret(&self, name: &str) -> Result<SecretString, ConfigError> {
        self.optional_secret(name)?
            .ok_or_else(|| ConfigError::Missing(self.var_name(name)))
    }

    /// A secret with a default (for example a Redis URL, which may carry a
    /// password).
    pub fn secret_or(&self, name: &str, default: &str) -> Result<SecretString, ConfigError> {
        Ok(self
            .optional_secret(name)?
            .unwrap_or_else(|| SecretString::from(default.to_owned())))
    }

    /// An optional secret: `<P>_<NAME>` or `<P>_<NAME>_FILE`, else the same
    /// pair with the `IDM_` prefix. Both of a pair set is an error; an empty
    /// value or file counts as unset.
    pub fn optional_secret(&self, name: &str) -> Result<Option<SecretString>, ConfigError> {
        for prefix in [self.prefix, "IDM"] {
            let var = format!("{prefix}_{name}");
            let file_var = format!("{var}_FILE");
            let value = std::env::var(&var).ok();
            let file = std::env::var(&file_var).ok();
            match (value, file) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::Invalid {
                        var: file_var,
                        reason: format!("set either {var} or {var}_FILE, not both"),
                    })
                }
                (Some(value), None) => {
                    return Ok(Some(value)
                        .filter(|v| !v.is_empty())
                        .map(SecretString::from))
                }
                (None, Some(path)) => return read_secret_file(&file_var, &path),
                (None, None) => {}
            }
        }
        Ok(None)
    }

    /// An optional file path (certificates and keys: the file itself is
    /// read by whoever uses it).
    pub fn path(&self, name: &str) -> Option<std::path::PathBuf> {
        self.optional(name).map(std::path::PathBuf::from)
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

fn read_secret_file(var: &str, path: &str) -> Result<Option<SecretString>, ConfigError> {
    let content = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
        var: var.to_owned(),
        reason: format!("cannot read {path}: {e}"),
    })?;
    let secret = zeroize::Zeroizing::new(content);
    let trimmed = secret.trim();
    Ok((!trimmed.is_empty()).then(|| SecretString::from(trimmed.to_owned())))
}

/// Where the JetStream streams a service creates live
/// (`<P>_NATS_STREAM_CLUSTER`, `<P>_NATS_STREAM_TAGS`): in a super cluster,
/// the cluster (for example the EU region's) or the servers carrying every
/// tag (`jurisdiction:eu`). Empty: wherever the creating server is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamPlacement {
    pub cluster: Option<String>,
    pub tags: Vec<String>,
}

impl StreamPlacement {
    pub fn is_empty(&self) -> bool {
        self.cluster.is_none() && self.tags.is_empty()
    }
}

/// How a service proves who it is to NATS, and how it checks the server.
#[derive(Debug, Clone, Default)]
pub struct NatsAuth {
    /// The service's nkey seed (`SU…`). Without one the connection is
    /// anonymous, which an idmesh NATS server refuses (dev servers only).
    pub nkey_seed: Option<SecretString>,
    /// CA that signed the server's certificate; when set, TLS is required.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// Client certificate and key, for servers that verify clients.
    pub tls_cert_file: Option<std::path::PathBuf>,
    pub tls_key_file: Option<std::path::PathBuf>,
}

impl NatsAuth {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let auth = Self {
            nkey_seed: env.optional_secret("NATS_NKEY_SEED")?,
            tls_ca_file: env.path("NATS_TLS_CA_FILE"),
            tls_cert_file: env.path("NATS_TLS_CERT_FILE"),
            tls_key_file: env.path("NATS_TLS_KEY_FILE"),
        };
        if auth.tls_cert_file.is_some() != auth.tls_key_file.is_some() {
            return Err(ConfigError::Invalid {
                var: env.var_name("NATS_TLS_KEY_FILE"),
                reason: format!(
                    "set both {} and {}, or neither",
                    env.var_name("NATS_TLS_CERT_FILE"),
                    env.var_name("NATS_TLS_KEY_FILE")
                ),
            });
        }
        Ok(auth)
    }
}

/// What every service needs: where NATS is and how to log in to it, the
/// subject prefix, and the address of its own health/metrics (and admin)
/// HTTP listener.
#[derive(Debug, Clone)]
pub struct ServiceBasics {
    /// One NATS server URL, or a comma-separated list of the servers of a
    /// cluster (the client tries them in turn and reconnects to another
    /// one when its server goes away).
    pub nats_url: String,
    /// How many servers of the cluster keep a copy of each JetStream stream
    /// this service creates (`MAIL`, `EVENTS`): 1 for a single server, 3 for
    /// a three-node cluster (a stream survives losing one node).
    pub nats_stream_replicas: usize,
    /// Where those streams are placed (residency: queued mail to EU users
    /// stays on EU servers); see docs/MESSAGING.md.
    pub nats_stream_placement: StreamPlacement,
    pub nats_auth: NatsAuth,
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
        let nats_stream_replicas = env.parse("NATS_STREAM_REPLICAS", 1usize)?;
        // NATS keeps at most five copies of a stream.
        if !(1..=5).contains(&nats_stream_replicas) {
            return Err(ConfigError::Invalid {
                var: env.var_name("NATS_STREAM_REPLICAS"),
                reason: "between 1 and 5 (3 for a three-node cluster)".into(),
            });
        }
        let nats_stream_placement = StreamPlacement {
            cluster: env
                .optional("NATS_STREAM_CLUSTER")
                .filter(|c| !c.trim().is_empty()),
            tags: env.list("NATS_STREAM_TAGS")?,
        };
        Ok(Self {
            nats_url: env.string("NATS_URL", "nats://127.0.0.1:4222"),
            nats_stream_replicas,
            nats_stream_placement,
            nats_auth: NatsAuth::from_env(env)?,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use secrecy::ExposeSecret;

    // Each test uses its own variable names: the environment is shared by
    // the tests running in parallel.
    fn temp_file(content: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("idm-secret-{}", uuid::Uuid::now_v7()));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn a_secret_comes_from_its_variable_or_from_a_trimmed_file() {
        let env = Env::new("CFGTA");
        std::env::set_var("CFGTA_TOKEN", "from-env");
        assert_eq!(env.secret("TOKEN").unwrap().expose_secret(), "from-env");
        let file = temp_file("  from-file\n");
        std::env::set_var("CFGTA_KEY_FILE", &file);
        assert_eq!(env.secret("KEY").unwrap().expose_secret(), "from-file");
        assert!(
            matches!(env.secret("ABSENT"), Err(ConfigError::Missing(v)) if v == "CFGTA_ABSENT")
        );
        assert!(env.optional_secret("ABSENT").unwrap().is_none());
        assert_eq!(
            env.secret_or("ABSENT", "fallback").unwrap().expose_secret(),
            "fallback"
        );
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn stream_replicas_default_to_one_and_stay_within_what_nats_allows() {
        let env = Env::new("CFGTR");
        assert_eq!(
            ServiceBasics::from_env(&env, 1)
                .unwrap()
                .nats_stream_replicas,
            1
        );
        std::env::set_var("CFGTR_NATS_STREAM_REPLICAS", "3");
        assert_eq!(
            ServiceBasics::from_env(&env, 1)
                .unwrap()
                .nats_stream_replicas,
            3
        );
        for bad in ["0", "6", "three"] {
            std::env::set_var("CFGTR_NATS_STREAM_REPLICAS", bad);
            let error = ServiceBasics::from_env(&env, 1).unwrap_err().to_string();
            assert!(error.contains("CFGTR_NATS_STREAM_REPLICAS"), "{error}");
        }
    }

    #[test]
    fn both_forms_at_once_or_an_unreadable_file_are_errors() {
        let env = Env::new("CFGTB");
        std::env::set_var("CFGTB_SEED", "x");
        std::env::set_var("CFGTB_SEED_FILE", "/dev/null");
        let both = env.secret("SEED").unwrap_err().to_string();
        assert!(
            both.contains("CFGTB_SEED_FILE") && both.contains("not both"),
            "{both}"
        );
        std::env::set_var("CFGTB_GONE_FILE", "/nonexistent/secret");
        assert!(env
            .secret("GONE")
            .unwrap_err()
            .to_string()
            .contains("CFGTB_GONE_FILE"));
    }

    #[test]
    fn the_service_pair_wins_over_the_shared_one() {
        let env = Env::new("CFGTC");
        let file = temp_file("own");
        std::env::set_var("IDM_CFGTC_ONLY", "shared");
        assert_eq!(env.secret("CFGTC_ONLY").unwrap().expose_secret(), "shared");
        std::env::set_var("CFGTC_CFGTC_ONLY_FILE", &file);
        assert_eq!(env.secret("CFGTC_ONLY").unwrap().expose_secret(), "own");
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let env = Env::new("CFGTD");
        std::env::set_var("CFGTD_NATS_TLS_CERT_FILE", "/tls/client.pem");
        assert!(NatsAuth::from_env(&env).is_err());
        std::env::set_var("CFGTD_NATS_TLS_KEY_FILE", "/tls/client.key");
        let auth = NatsAuth::from_env(&env).unwrap();
        assert!(auth.nkey_seed.is_none() && auth.tls_ca_file.is_none());
    }
}
