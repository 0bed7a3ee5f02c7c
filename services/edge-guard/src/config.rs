use idm_core::config::{ConfigError, Env, ServiceBasics};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// `EDGE_*` variables.
#[derive(Debug, Clone)]
pub struct Config {
    pub basics: ServiceBasics,
    /// Internal listener for `/healthz`, `/readyz` and `/metrics`.
    pub ops_addr: std::net::SocketAddr,
    /// Peers whose `X-Forwarded-For` and country header are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Header carrying the client's ISO country, set by a trusted proxy.
    pub country_header: String,
    pub max_body_bytes: usize,
    /// How long a resolved API key (or an unknown one) stays cached.
    pub key_cache_ttl: Duration,
    pub key_cache_capacity: u64,
    /// Redis holding the WAF's rate state (under `<redis_prefix>waf:`): a
    /// cache (docs/FAULTS.md). Revocations are not kept there.
    pub redis_url: String,
    pub redis_prefix: String,
    /// Mark the session cookies `Secure` (the `__Host-` and `__Secure-`
    /// prefixes require it; without it they are dropped).
    pub cookie_secure: bool,
    /// Platform subdomains per issuer: `<issuer handle>.<suffix>`
    /// (`EDGE_ISSUER_HOST_SUFFIX`; unset: none).
    pub issuer_host_suffix: Option<String>,
    /// The WAF's platform-wide settings (per-issuer ones are in the policy).
    pub waf: crate::waf::WafConfig,
    /// Base64 of 32 bytes, shared with the session service only: opens the
    /// signing keys it sends sealed over the bus.
    pub key_transport_key: SecretString,
    /// Revoked sessions this replica remembers at most. Never evicted: when
    /// full, the issuers whose revocations do not fit are answered
    /// `503 overloaded`. Size it as revocations per second × the longest
    /// session-token lifetime (a day at most), with headroom.
    pub revocation_capacity: usize,
    /// How long a `GET /v1/client/me` answer is remembered per session
    /// (`EDGE_ME_CACHE_TTL_MS`; 0: never). Changes and revocations reach
    /// the edges by broadcast at once; this bounds what a lost one costs.
    pub me_cache_ttl: Duration,
    /// Bytes of remembered `/me` answers (`EDGE_ME_CACHE_BYTES`).
    pub me_cache_bytes: u64,
    /// Where this edge runs (`EDGE_JURISDICTION`, `global` unless set to
    /// `eu`): only an edge in the EU remembers EU users' answers.
    pub jurisdiction: idm_core::Jurisdiction,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("EDGE");
        Ok(Self {
            basics: ServiceBasics::from_env(&env, 8080)?,
            ops_addr: env.parse(
                "OPS_ADDR",
                std::net::SocketAddr::from(([127, 0, 0, 1], 9080)),
            )?,
            trusted_proxies: env.list("TRUSTED_PROXIES")?,
            country_header: env
                .string("COUNTRY_HEADER", "cf-ipcountry")
                .to_ascii_lowercase(),
            max_body_bytes: env.parse("MAX_BODY_BYTES", 64 * 1024)?,
            key_cache_ttl: Duration::from_secs(env.parse("KEY_CACHE_TTL_SECONDS", 60)?),
            key_cache_capacity: env.parse("KEY_CACHE_CAPACITY", 100_000)?,
            cookie_secure: env.parse("COOKIE_SECURE", true)?,
            issuer_host_suffix: env
                .optional("ISSUER_HOST_SUFFIX")
                .map(|raw| {
                    idm_core::DomainName::parse(&raw)
                        .map(String::from)
                        .map_err(|e| ConfigError::Invalid {
                            var: env.var_name("ISSUER_HOST_SUFFIX"),
                            reason: e.message,
                        })
                })
                .transpose()?,
            // A secret (it may carry a password), so `EDGE_REDIS_URL_FILE` works too.
            redis_url: secrecy::ExposeSecret::expose_secret(
                &env.secret_or("REDIS_URL", "redis://127.0.0.1:6379")?,
            )
            .to_owned(),
            redis_prefix: env.string("REDIS_PREFIX", "idm:"),
            waf: waf_config(&env)?,
            key_transport_key: env.secret("KEY_TRANSPORT_KEY")?,
            revocation_capacity: env.parse("REVOCATION_CAPACITY", 1_000_000)?,
            me_cache_ttl: me_cache_ttl(&env)?,
            me_cache_bytes: env.parse("ME_CACHE_BYTES", 64 << 20)?,
            jurisdiction: match env.optional("JURISDICTION") {
                None => idm_core::Jurisdiction::Global,
                Some(raw) => {
                    idm_core::Jurisdiction::parse(&raw).map_err(|e| ConfigError::Invalid {
                        var: env.var_name("JURISDICTION"),
                        reason: e.message,
                    })?
                }
            },
        })
    }

    pub(crate) fn key_transport_key(&self) -> &str {
        self.key_transport_key.expose_secret()
    }
}

/// At most a minute: the TTL is what a lost `user.changed` or revocation
/// broadcast can cost (a stale profile, or `/me` for a session revoked in
/// its store behind every edge's back), so it may not be set to hours.
fn me_cache_ttl(env: &Env) -> Result<Duration, ConfigError> {
    let millis: u64 = env.parse("ME_CACHE_TTL_MS", 2_000)?;
    if millis > 60_000 {
        return Err(ConfigError::Invalid {
            var: env.var_name("ME_CACHE_TTL_MS"),
            reason: "at most 60000 (a minute); 0 turns the cache off".into(),
        });
    }
    Ok(Duration::from_millis(millis))
}

fn waf_config(env: &Env) -> Result<crate::waf::WafConfig, ConfigError> {
    let defaults = crate::waf::WafConfig::default();
    let operator_token = env.optional_secret("OPERATOR_TOKEN")?;
    if operator_token
        .as_ref()
        .is_some_and(|t| secrecy::ExposeSecret::expose_secret(t).len() < 16)
    {
        return Err(ConfigError::Invalid {
            var: env.var_name("OPERATOR_TOKEN"),
            reason: "use at least 16 characters".into(),
        });
    }
    Ok(crate::waf::WafConfig {
        redis_timeout: Duration::from_millis(env.parse(
            "REDIS_TIMEOUT_MS",
            defaults.redis_timeout.as_millis() as u64,
        )?),
        key_lookups_per_minute: env
            .parse("KEY_LOOKUPS_PER_MINUTE", defaults.key_lookups_per_minute)?,
        operator_token,
        max_bans_per_issuer: env.parse("MAX_BANS_PER_ISSUER", defaults.max_bans_per_issuer)?,
        max_in_flight_per_issuer: env.parse(
            "MAX_IN_FLIGHT_PER_ISSUER",
            defaults.max_in_flight_per_issuer,
        )?,
        hash_shed_window: Duration::from_millis(
            env.parse("HASH_SHED_MS", defaults.hash_shed_window.as_millis() as u64)?,
        ),
        recipient_key: crate::waf::RecipientKey::from_base64(secrecy::ExposeSecret::expose_secret(
            &env.secret("HASH_KEY")?,
        ))
        .map_err(|reason| ConfigError::Invalid {
            var: env.var_name("HASH_KEY"),
            reason,
        })?,
    })
}
