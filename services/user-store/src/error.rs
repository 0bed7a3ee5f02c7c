use idm_core::{ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Db(#[from] idm_db::DbError),
    #[error(transparent)]
    Crypto(#[from] idm_crypto::CryptoError),
    #[error(transparent)]
    Bus(#[from] idm_bus::BusError),
    #[error(transparent)]
    Stopped(#[from] idm_telemetry::Stopped),
    #[error(transparent)]
    Config(#[from] idm_core::config::ConfigError),
    /// The issuer has no schema in this region, so no data here: nothing it
    /// asks for exists (see `storage::schemas`).
    #[error("the issuer has no data in this region")]
    NoSchema,
    /// The issuer's schema here is behind the version this build needs:
    /// serving it would run statements against tables it does not have yet.
    #[error("issuer schema at version {version}, this build needs {required}")]
    SchemaBehind { version: i64, required: i64 },
    #[error("schema migration: {0}")]
    Migration(String),
    #[error("HTTP listener: {0}")]
    Io(#[from] std::io::Error),
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        match error {
            Error::Api(api) => api,
            Error::NoSchema => ApiError::not_found("user"),
            Error::SchemaBehind { version, required } => {
                tracing::error!(
                    version,
                    required,
                    "issuer schema behind this build; run `idm-user-store migrate`"
                );
                metrics::counter!(idm_core::metric::STORE_SCHEMA_BEHIND.name).increment(1);
                ApiError::new(
                    ErrorCode::RegionUnavailable,
                    "this application's data in the region awaits a schema migration; retry later",
                )
                .with_details(serde_json::json!({ "retry_after": 30 }))
            }
            Error::Crypto(idm_crypto::CryptoError::Overloaded { retry_after }) => overloaded(
                "the store is busy with this application's password checks; retry shortly",
                retry_after,
            ),
            Error::Db(db) if db.is_unavailable() => {
                tracing::error!(error = %db, "regional database unavailable");
                ApiError::new(
                    ErrorCode::RegionUnavailable,
                    "the region's store is unavailable",
                )
            }
            Error::Migration(why) => {
                tracing::error!(error = %why, "issuer schema could not be provisioned or migrated");
                ApiError::new(
                    ErrorCode::RegionUnavailable,
                    "this application's data in the region could not be prepared; retry later",
                )
                .with_details(serde_json::json!({ "retry_after": 30 }))
            }
            other => ApiError::internal_from(&other),
        }
    }
}

/// `503 overloaded` with `Retry-After`: the issuer already holds its fair
/// share of a store resource (see `idm_core::fair_share`).
pub(crate) fn overloaded(message: &str, retry_after: std::time::Duration) -> ApiError {
    ApiError::new(ErrorCode::Overloaded, message)
        .with_details(serde_json::json!({ "retry_after": retry_after.as_secs().max(1) }))
}
