//! `WEBHOOK_*` variables (README.md lists them all).

use idm_core::config::{ConfigError, Env, ServiceBasics};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// The default retry schedule: the delay before each attempt after the
/// first failure (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h).
pub const DEFAULT_SCHEDULE_MS: [u64; 8] = [
    0, 5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000,
];

#[derive(Debug, Clone)]
pub struct Config {
    pub basics: ServiceBasics,
    pub database_url: SecretString,
    pub pool_size: usize,
    /// Seals endpoint secrets (base64 of 32 bytes).
    pub master_key: SecretString,
    /// The key before the current one during a master-key rotation.
    pub master_key_previous: Option<SecretString>,
    pub delivery: Delivery,
}

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The delay before each attempt: the first entry is the first attempt
    /// (0: at once), then one per retry; past the last the message is a
    /// dead letter.
    pub schedule: Vec<Duration>,
    /// Each delay is moved by up to this fraction either way (0.2: ±20 %).
    pub jitter: f64,
    /// An endpoint failing without a success for this long is disabled.
    pub disable_after: Duration,
    pub connect_timeout: Duration,
    /// The whole attempt: connect, send, answer and its body.
    pub timeout: Duration,
    /// Answers longer than this are cut (and the attempt still counts by
    /// its status).
    pub max_response_bytes: usize,
    /// Deliveries in flight per endpoint (per replica): a slow endpoint
    /// uses its own slots, never another's.
    pub endpoint_concurrency: usize,
    /// Deliveries in flight in all.
    pub total_concurrency: usize,
    /// How long the old secret keeps signing after a rotation.
    pub secret_overlap: Duration,
    /// How often due retries are looked for (new events wake it at once).
    pub poll_interval: Duration,
    /// Delivered messages (with their attempts) and the events no message
    /// refers to any more are deleted after this long; dead letters and
    /// pending messages are kept.
    pub retention: Duration,
    /// Plain `http://` endpoint URLs are accepted (development only).
    pub allow_http: bool,
    /// Networks an endpoint may point into although they are internal
    /// (loopback, private, ...): the operator's allowlist.
    pub allowed_networks: Vec<IpNet>,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            schedule: DEFAULT_SCHEDULE_MS
                .iter()
                .map(|ms| Duration::from_millis(*ms))
                .collect(),
            jitter: 0.2,
            disable_after: Duration::from_secs(5 * 24 * 3600),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            max_response_bytes: 64 * 1024,
            endpoint_concurrency: 4,
            total_concurrency: 256,
            secret_overlap: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(30 * 24 * 3600),
            allow_http: false,
            allowed_networks: Vec::new(),
        }
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("WEBHOOK");
        let defaults = Delivery::default();
        let schedule_ms: Vec<u64> = env.list("RETRY_SCHEDULE_MS")?;
        let schedule = if schedule_ms.is_empty() {
            defaults.schedule.clone()
        } else {
            schedule_ms.into_iter().map(Duration::from_millis).collect()
        };
        let jitter_percent: u32 = env.parse("RETRY_JITTER_PERCENT", 20)?;
        if jitter_percent > 100 {
            return Err(ConfigError::Invalid {
                var: env.var_name("RETRY_JITTER_PERCENT"),
                reason: "at most 100".into(),
            });
        }
        let ms = |name: &str, default: Duration| -> Result<Duration, ConfigError> {
            Ok(Duration::from_millis(env.parse(
                name,
                u64::try_from(default.as_millis()).unwrap_or(u64::MAX),
            )?))
        };
        let delivery = Delivery {
            schedule,
            jitter: f64::from(jitter_percent) / 100.0,
            disable_after: Duration::from_secs(
                env.parse("DISABLE_AFTER_SECONDS", defaults.disable_after.as_secs())?,
            ),
            connect_timeout: ms("CONNECT_TIMEOUT_MS", defaults.connect_timeout)?,
            timeout: ms("TIMEOUT_MS", defaults.timeout)?,
            max_response_bytes: env.parse("MAX_RESPONSE_BYTES", defaults.max_response_bytes)?,
            endpoint_concurrency: env
                .parse("ENDPOINT_CONCURRENCY", defaults.endpoint_concurrency)?
                .max(1),
            total_concurrency: env
                .parse("TOTAL_CONCURRENCY", defaults.total_concurrency)?
                .max(1),
            secret_overlap: Duration::from_secs(
                env.parse("SECRET_OVERLAP_SECONDS", defaults.secret_overlap.as_secs())?,
            ),
            poll_interval: ms("POLL_INTERVAL_MS", defaults.poll_interval)?,
            retention: Duration::from_secs(
                env.parse("RETENTION_SECONDS", defaults.retention.as_secs())?,
            ),
            allow_http: env.parse("ALLOW_HTTP", false)?,
            allowed_networks: env.list("ALLOWED_NETWORKS")?,
        };
        Ok(Self {
            basics: ServiceBasics::from_env(&env, 8087)?,
            database_url: env.secret("DATABASE_URL")?,
            pool_size: env.parse("DB_POOL_SIZE", 4)?,
            master_key: env.secret("MASTER_KEY")?,
            master_key_previous: env.optional_secret("MASTER_KEY_PREVIOUS")?,
            delivery,
        })
    }

    pub(crate) fn master_keys(&self) -> Result<idm_crypto::MasterKeys, idm_crypto::CryptoError> {
        idm_crypto::MasterKeys::from_base64(
            self.master_key.expose_secret(),
            self.master_key_previous.as_ref().map(|k| k.expose_secret()),
        )
    }
}
