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
    #[error("HTTP listener: {0}")]
    Io(#[from] std::io::Error),
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        match error {
            Error::Api(api) => api,
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
