use idm_core::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Bus(#[from] idm_bus::BusError),
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

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        match error {
            Error::Api(api) => api,
            other => ApiError::internal_from(&other),
        }
    }
}
