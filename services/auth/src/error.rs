use idm_core::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("AUTH_REDIS_URL: {0}")]
    RedisUrl(String),
    #[error(transparent)]
    Bus(#[from] idm_bus::BusError),
    #[error(transparent)]
    Stopped(#[from] idm_telemetry::Stopped),
    #[error(transparent)]
    Db(#[from] idm_db::DbError),
    #[error(transparent)]
    Crypto(#[from] idm_crypto::CryptoError),
    #[error("mail: {0}")]
    Mail(String),
    #[error(transparent)]
    Config(#[from] idm_core::config::ConfigError),
    #[error("HTTP listener: {0}")]
    Io(#[from] std::io::Error),
}

impl From<idm_cache::CacheError> for Error {
    fn from(e: idm_cache::CacheError) -> Self {
        match e {
            idm_cache::CacheError::Redis(e) => Error::Redis(e),
            idm_cache::CacheError::Url(why) => Error::RedisUrl(why),
        }
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        match error {
            Error::Api(api) => api,
            // A dependency that is down is a 503 the client may retry, never a 500.
            Error::Db(db) if db.is_unavailable() => {
                tracing::error!(error = %db, "auth database unavailable");
                ApiError::upstream("the auth database is unavailable")
            }
            Error::Redis(e)
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout() =>
            {
                tracing::error!(error = %e, "auth Redis unavailable");
                ApiError::upstream("the code store is unavailable")
            }
            other => ApiError::internal_from(&other),
        }
    }
}
