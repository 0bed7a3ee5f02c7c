use idm_core::config::{ConfigError, Env, ServiceBasics};
use idm_core::{Jurisdiction, Region};
use idm_crypto::PasswordParams;
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

/// `STORE_*` variables (shared ones may also come from `IDM_*`).
#[derive(Debug, Clone)]
pub struct Config {
    pub basics: ServiceBasics,
    pub region: Region,
    /// The jurisdiction this store announces (`STORE_JURISDICTION`, by
    /// default its region's). Configurable so a wrong one is possible and
    /// caught: the store reports it in `/readyz` and the user service
    /// refuses to route to it.
    pub jurisdiction: Jurisdiction,
    /// How the residency evidence names the database server
    /// (`STORE_DATABASE_LABEL`; by default `host:port/dbname` of the URL,
    /// without credentials).
    pub database_label: Option<String>,
    pub database_url: SecretString,
    pub pool_size: usize,
    /// How long a database connection is used before it is replaced
    /// (`STORE_DB_CONNECTION_MAX_AGE_SECONDS`, default 300): it bounds the
    /// catalog cache a backend builds up over the issuer schemas it serves.
    pub connection_max_age: Duration,
    pub password: PasswordParams,
    /// Concurrent Argon2 computations; 0 means one per core.
    pub max_parallel_hashes: usize,
    /// Password checks that may wait for a hashing worker, shared fairly
    /// between issuers (see `idm_core::fair_share`); 0 means four per worker.
    pub hash_queue: usize,
    /// Requests that may wait for a pooled connection, shared fairly between
    /// issuers like the connections themselves; 0 means eight per connection.
    pub db_queue: usize,
    /// Bring every issuer schema up to date before serving
    /// (`STORE_MIGRATE_ON_START`, default true). Large regions turn it off
    /// and run `idm-user-store migrate` as a job instead, so start-up does not
    /// walk every schema; stores refuse issuers whose schema is behind.
    pub migrate_on_start: bool,
    /// Schemas migrated at once (`STORE_MIGRATE_PARALLEL`).
    pub migrate_parallel: usize,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = Env::new("STORE");
        let region = env.required("REGION")?;
        let region = Region::parse(&region).map_err(|e| ConfigError::Invalid {
            var: env.var_name("REGION"),
            reason: e.message,
        })?;
        let jurisdiction = env.string("JURISDICTION", region.jurisdiction().as_str());
        let jurisdiction =
            Jurisdiction::parse(&jurisdiction).map_err(|e| ConfigError::Invalid {
                var: env.var_name("JURISDICTION"),
                reason: e.message,
            })?;
        let label = env.string("DATABASE_LABEL", "");
        let defaults = PasswordParams::default();
        Ok(Self {
            basics: ServiceBasics::from_env(&env, 8090)?,
            region,
            jurisdiction,
            database_label: (!label.is_empty()).then_some(label),
            database_url: env.secret("DATABASE_URL")?,
            pool_size: env.parse("DB_POOL_SIZE", 16)?,
            connection_max_age: Duration::from_secs(
                env.parse::<u64>("DB_CONNECTION_MAX_AGE_SECONDS", 300)?
                    .max(1),
            ),
            password: PasswordParams {
                memory_kib: env.parse("ARGON2_MEMORY_KIB", defaults.memory_kib)?,
                iterations: env.parse("ARGON2_ITERATIONS", defaults.iterations)?,
                parallelism: env.parse("ARGON2_PARALLELISM", defaults.parallelism)?,
            },
            max_parallel_hashes: env.parse("MAX_PARALLEL_HASHES", 0)?,
            hash_queue: env.parse("HASH_QUEUE", 0)?,
            db_queue: env.parse("DB_QUEUE", 0)?,
            migrate_on_start: env.parse("MIGRATE_ON_START", true)?,
            migrate_parallel: env.parse("MIGRATE_PARALLEL", 4)?,
        })
    }

    pub(crate) fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }

    /// The configured label, else `host:port/dbname` of the database URL
    /// (never its user or password).
    pub fn database_label(&self) -> String {
        if let Some(label) = &self.database_label {
            return label.clone();
        }
        database_label_of(self.database_url())
    }
}

/// `host:port/dbname` of a PostgreSQL URL; `unknown` when it does not parse.
pub fn database_label_of(url: &str) -> String {
    use std::str::FromStr;
    match sqlx::postgres::PgConnectOptions::from_str(url) {
        Ok(options) => format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or("postgres")
        ),
        Err(_) => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_label_carries_no_credentials() {
        assert_eq!(
            super::database_label_of(
                "postgres://idm:s3cret@db.weur.internal:6432/idm_weur?sslmode=require"
            ),
            "db.weur.internal:6432/idm_weur"
        );
    }
}
