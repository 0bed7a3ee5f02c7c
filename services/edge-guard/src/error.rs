use idm_core::ApiError;

/// Start-up failures; request errors are `ApiError`s mapped by `HttpError`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Bus(#[from] idm_bus::BusError),
    #[error(transparent)]
    Stopped(#[from] idm_telemetry::Stopped),
    #[error(transparent)]
    Config(#[from] idm_core::config::ConfigError),
    #[error("HTTP listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot subscribe to invalidations: {0}")]
    Subscribe(String),
    #[error("{0}")]
    Redis(String),
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        ApiError::internal_from(&error)
    }
}
