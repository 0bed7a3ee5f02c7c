use idm_core::clock::Clock;
use idm_core::config::{ConfigError, Env, ServiceBasics};
use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;
use std::time::Duration;

/// How outgoing mail leaves the courier.
#[derive(Debug, Clone)]
pub enum MailTransport {
    /// Each message written as an `.eml` file in this folder (development).
    Files(PathBuf),
    Smtp(SmtpConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text (local relays and test sinks only).
    None,
    /// STARTTLS upgrade, required.
    StartTls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// A PEM file of extra root certificates the relay's certificate may
    /// chain to (a private relay's own CA), besides the public roots.
    pub ca_file: Option<PathBuf>,
}

/// DKIM signing of every outgoing message (`AUTH_MAIL_DKIM_*`).
#[derive(Debug, Clone)]
pub struct DkimSettings {
    /// `d=`: the signing domain, whose DNS publishes the public key.
    pub domain: String,
    /// `s=`: the key's selector (`<selector>._domainkey.<domain>`).
    pub selector: String,
    pub algorithm: DkimAlgorithm,
    /// RSA: a PKCS#1 PEM (`BEGIN RSA PRIVATE KEY`); Ed25519: the base64 of
    /// the 32-byte private key.
    pub key: SecretString,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimAlgorithm {
    Rsa,
    Ed25519,
}

/// An issuer's sender domain the operator verified (`AUTH_MAIL_VERIFIED_SENDERS`):
/// that issuer's `policy.mail.sender` is used when its domain is this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSender {
    pub issuer_id: String,
    pub domain: String,
}

/// The platform's sender when `AUTH_MAIL_FROM` is not set: the reserved
/// `.example` top-level domain (RFC 2606) passes strict address validation
/// (`.localhost` and `.invalid` do not) yet can never be anybody's real
/// domain. Production sets its own.
pub const DEFAULT_MAIL_FROM: &str = "idmesh <no-reply@idmesh.example>";

fn verified_senders(env: &Env) -> Result<Vec<VerifiedSender>, ConfigError> {
    let Some(raw) = env.optional("MAIL_VERIFIED_SENDERS") else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| {
            let invalid = |reason: &str| ConfigError::Invalid {
                var: env.var_name("MAIL_VERIFIED_SENDERS"),
                reason: format!("'{entry}': {reason}"),
            };
            let (issuer, domain) = entry
                .split_once('=')
                .ok_or_else(|| invalid("expected <issuer id>=<domain>"))?;
            let issuer = idm_core::IssuerId::parse(issuer.trim())
                .map_err(|_| invalid("not an issuer id"))?;
            let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
            if domain.is_empty()
                || !domain.contains('.')
                || !domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            {
                return Err(invalid("not a domain name"));
            }
            Ok(VerifiedSender {
                issuer_id: issuer.as_str().to_owned(),
                domain,
            })
        })
        .collect()
}

fn dkim(env: &Env) -> Result<Option<DkimSettings>, ConfigError> {
    let Some(key) = env.optional_secret("MAIL_DKIM_KEY")? else {
        return Ok(None);
    };
    let algorithm = match env.string("MAIL_DKIM_ALGORITHM", "rsa").as_str() {
        "rsa" => DkimAlgorithm::Rsa,
        "ed25519" => DkimAlgorithm::Ed25519,
        other => {
            return Err(ConfigError::Invalid {
                var: env.var_name("MAIL_DKIM_ALGORITHM"),
                reason: format!("'{other}' is not rsa or ed25519"),
            })
        }
    };
    Ok(Some(DkimSettings {
        domain: env.required("MAIL_DKIM_DOMAIN")?,
        selector: env.required("MAIL_DKIM_SELECTOR")?,
        algorithm,
        key,
    }))
}

/// `AUTH_*` variables.
#[derive(Debug, Clone)]
pub struct Config {
    pub basics: ServiceBasics,
    /// Global database (schema `auth`): the durable failure ledger.
    pub database_url: SecretString,
    pub pool_size: usize,
    pub redis_url: SecretString,
    /// Prefix of every Redis key this service writes (one-time codes).
    pub redis_prefix: String,
    /// Base64 of 32 bytes: seals TOTP secrets and keys the code MACs.
    pub master_key: SecretString,
    /// During a master-key rotation, the key before `master_key`: it only
    /// opens values sealed before the rotation (a re-seal pass moves them to
    /// the current key); remove it once `idm_sealed_rows_previous_key` is 0.
    pub master_key_previous: Option<SecretString>,
    /// Failed sign-ins never answer sooner than this, so the failure paths
    /// (unknown user, wrong password) are indistinguishable by time.
    pub min_sign_in: Duration,
    /// The same floor for every code, link and MFA verification failure.
    pub min_verify: Duration,
    pub magic_link_ttl: Duration,
    pub email_code_ttl: Duration,
    pub verification_ttl: Duration,
    pub mfa_token_ttl: Duration,
    pub max_code_attempts: u32,
    /// Failure budgets per user and per address (docs/SECURITY.md).
    pub failure_limits: crate::budget::Limits,
    /// The platform's sender (`Name <address>`): every message comes from
    /// its address unless the issuer has a verified sender of its own; the
    /// display name is the issuer's.
    pub mail_from: String,
    pub mail_verified_senders: Vec<VerifiedSender>,
    pub mail_dkim: Option<DkimSettings>,
    pub mail: MailTransport,
    /// Time source for expiry and TOTP; tests move it forward.
    pub clock: Clock,
}

fn seconds(env: &Env, name: &str, default: u64) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(env.parse(name, default)?))
}

fn failure_limits(env: &Env) -> Result<crate::budget::Limits, ConfigError> {
    let defaults = crate::budget::Limits::default();
    let limits = crate::budget::Limits {
        backoff_after: env.parse("FACTOR_BACKOFF_AFTER", defaults.backoff_after)?,
        lock_after: env.parse("FACTOR_LOCK_AFTER", defaults.lock_after)?,
        backoff: seconds(env, "FACTOR_BACKOFF_SECONDS", defaults.backoff.as_secs())?,
        max_backoff: seconds(
            env,
            "FACTOR_MAX_BACKOFF_SECONDS",
            defaults.max_backoff.as_secs(),
        )?,
        memory: seconds(env, "FAILURE_MEMORY_SECONDS", defaults.memory.as_secs())?,
    };
    if limits.backoff_after == 0 || limits.lock_after <= limits.backoff_after {
        return Err(ConfigError::Invalid {
            var: env.var_name("FACTOR_LOCK_AFTER"),
            reason: "must be greater than AUTH_FACTOR_BACKOFF_AFTER, which must be at least 1"
                .into(),
        });
    }
    if limits.memory.as_secs() < 60 {
        return Err(ConfigError::Invalid {
            var: env.var_name("FAILURE_MEMORY_SECONDS"),
            reason: "must be at least 60".into(),
        });
    }
    Ok(limits)
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("AUTH");
        let mail = match env.string("MAIL_TRANSPORT", "files").as_str() {
            "files" => MailTransport::Files(PathBuf::from(env.string("MAIL_DIR", ".idmesh/mail"))),
            "smtp" => MailTransport::Smtp(SmtpConfig {
                host: env.required("SMTP_HOST")?,
                port: env.parse("SMTP_PORT", 587)?,
                tls: match env.string("SMTP_TLS", "starttls").as_str() {
                    "none" => SmtpTls::None,
                    "starttls" => SmtpTls::StartTls,
                    "tls" => SmtpTls::Tls,
                    other => {
                        return Err(ConfigError::Invalid {
                            var: env.var_name("SMTP_TLS"),
                            reason: format!("'{other}' is not none, starttls or tls"),
                        })
                    }
                },
                username: env.optional("SMTP_USERNAME"),
                password: env.optional_secret("SMTP_PASSWORD")?,
                ca_file: env.path("SMTP_CA_FILE"),
            }),
            other => {
                return Err(ConfigError::Invalid {
                    var: env.var_name("MAIL_TRANSPORT"),
                    reason: format!("'{other}' is not files or smtp"),
                })
            }
        };
        Ok(Self {
            basics: ServiceBasics::from_env(&env, 8082)?,
            database_url: env.secret("DATABASE_URL")?,
            pool_size: env.parse("DB_POOL_SIZE", 8)?,
            redis_url: env.secret_or("REDIS_URL", "redis://127.0.0.1:6379")?,
            redis_prefix: env.string("REDIS_PREFIX", "idm:"),
            master_key: env.secret("MASTER_KEY")?,
            master_key_previous: env.optional_secret("MASTER_KEY_PREVIOUS")?,
            min_sign_in: Duration::from_millis(env.parse("MIN_SIGN_IN_MS", 300u64)?),
            min_verify: Duration::from_millis(env.parse("MIN_VERIFY_MS", 300u64)?),
            magic_link_ttl: seconds(&env, "MAGIC_LINK_TTL_SECONDS", 900)?,
            email_code_ttl: seconds(&env, "EMAIL_CODE_TTL_SECONDS", 600)?,
            verification_ttl: seconds(&env, "VERIFICATION_TTL_SECONDS", 600)?,
            mfa_token_ttl: seconds(&env, "MFA_TOKEN_TTL_SECONDS", 300)?,
            max_code_attempts: env.parse("MAX_CODE_ATTEMPTS", 5)?,
            failure_limits: failure_limits(&env)?,
            mail_from: env.string("MAIL_FROM", DEFAULT_MAIL_FROM),
            mail_verified_senders: verified_senders(&env)?,
            mail_dkim: dkim(&env)?,
            mail,
            clock: Clock::system(),
        })
    }

    pub(crate) fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }

    pub(crate) fn redis_url(&self) -> &str {
        self.redis_url.expose_secret()
    }

    pub(crate) fn master_key(&self) -> &str {
        self.master_key.expose_secret()
    }

    pub(crate) fn master_key_previous(&self) -> Option<&str> {
        self.master_key_previous.as_ref().map(|k| k.expose_secret())
    }
}
