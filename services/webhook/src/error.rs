use idm_core::{ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Db(#[from] idm_db::DbError),
    #[error(transparent)]
    Bus(#[from] idm_bus::BusError),
    #[error(transparent)]
    Crypto(#[from] idm_crypto::CryptoError),
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
            Error::Db(db) if db.is_unavailable() => {
                tracing::error!(error = %db, "database unavailable");
                ApiError::new(
                    ErrorCode::UpstreamUnavailable,
                    "the webhook database is unavailable",
                )
            }
            other => ApiError::internal_from(&other),
        }
    }
}
