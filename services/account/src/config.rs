use idm_core::config::{ConfigError, Env, ServiceBasics};
use idm_core::AccountPlan;
use secrecy::{ExposeSecret, SecretString};

/// `ACCOUNT_*` variables.
#[derive(Debug, Clone)]
pub struct Config {
    pub basics: ServiceBasics,
    pub database_url: SecretString,
    pub pool_size: usize,
    /// Bearer token for the operator API (`/admin/v1/...`).
    pub operator_token: SecretString,
    /// The plan of accounts the operator has not given one
    /// (`ACCOUNT_DEFAULT_PLAN`, JSON; fields not given take the built-in
    /// defaults, see `idm_core::plan`).
    pub default_plan: AccountPlan,
    /// The DNS server custom-domain TXT records are looked up at
    /// (`ACCOUNT_DNS_RESOLVER`, `ip:port`); unset: the system's resolver.
    pub dns_resolver: Option<std::net::SocketAddr>,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("ACCOUNT");
        let operator_token = env.secret("OPERATOR_TOKEN")?;
        if operator_token.expose_secret().len() < 16 {
            return Err(ConfigError::Invalid {
                var: env.var_name("OPERATOR_TOKEN"),
                reason: "use at least 16 characters".into(),
            });
        }
        let default_plan = match env.optional("DEFAULT_PLAN") {
            None => AccountPlan::default(),
            Some(json) => {
                let invalid = |reason: String| ConfigError::Invalid {
                    var: env.var_name("DEFAULT_PLAN"),
                    reason,
                };
                let plan: AccountPlan =
                    serde_json::from_str(&json).map_err(|e| invalid(e.to_string()))?;
                plan.validate().map_err(|e| invalid(e.message))?;
                plan
            }
        };
        Ok(Self {
            basics: ServiceBasics::from_env(&env, 8081)?,
            default_plan,
            database_url: env.secret("DATABASE_URL")?,
            pool_size: env.parse("DB_POOL_SIZE", 16)?,
            operator_token,
            dns_resolver: env
                .optional("DNS_RESOLVER")
                .map(|raw| {
                    raw.parse().map_err(|_| ConfigError::Invalid {
                        var: env.var_name("DNS_RESOLVER"),
                        reason: "give ip:port".into(),
                    })
                })
                .transpose()?,
        })
    }

    pub(crate) fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }
}
