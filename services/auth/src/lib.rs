//! auth: end-user authentication flows. Sign-up and password sign-in here;
//! magic links, email codes, TOTP and the mail courier arrive with the
//! passwordless issue. Passwords are only passed through: the regional store
//! hashes and verifies them.

mod config;
mod error;
mod handlers;

pub use config::Config;
pub use error::Error;

use idm_bus::{Bus, Handlers};
use idm_core::proto::auth as op;
use idm_telemetry::Running;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(crate) struct State {
    pub bus: Bus,
    pub min_sign_in: Duration,
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let redis = redis::Client::open(config.redis_url())?;
    let redis = redis::aio::ConnectionManager::new(redis).await?;
    let bus = Bus::connect(
        &config.basics.nats_url,
        &config.basics.subject_prefix,
        config.basics.request_timeout,
        "auth",
    )
    .await?;
    let state = Arc::new(State {
        bus: bus.clone(),
        min_sign_in: config.min_sign_in,
    });
    let handlers = Handlers::new()
        .on(op::SIGN_UP, handlers::sign_up)
        .on(op::SIGN_IN, handlers::sign_in);
    let serving = idm_bus::serve(
        &bus,
        format!("{}.auth.v1", bus.prefix()),
        "auth".into(),
        handlers,
        state,
        shutdown.clone(),
    )
    .await?;
    let redis_probe = idm_telemetry::probe(move || {
        let mut redis = redis.clone();
        async move {
            redis::cmd("PING")
                .query_async::<String>(&mut redis)
                .await
                .map(drop)
                .map_err(|e| format!("redis: {e}"))
        }
    });
    let ready = idm_telemetry::all_of(vec![redis_probe, bus.probe()]);
    let (http_addr, http) = idm_telemetry::serve_http(
        config.basics.http_addr,
        idm_telemetry::ops_router(ready),
        shutdown,
    )
    .await?;
    tracing::info!(%http_addr, "auth started");
    Ok(Running::new(http_addr, vec![serving, http]))
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}
