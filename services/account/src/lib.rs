//! account: the control plane. Accounts, issuers and their provisioning in
//! every region, API keys (stored as SHA-256 hashes only), allowed origins and
//! issuer policies. Serves key resolution to edge-guard and broadcasts
//! `config.changed` so every edge drops stale cache entries at once.

mod admin_http;
mod audit;
mod config;
mod delegation;
mod domains;
mod error;
mod handlers;
mod idempotency;
mod migrations;
mod provisioning;
mod storage;

pub use config::Config;
pub use error::Error;

use idm_bus::{Bus, Handlers};
use idm_db::Db;
use idm_telemetry::Running;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub(crate) struct State {
    pub db: Db,
    pub bus: Bus,
    /// Publishes to `EVENTS` (key and issuer changes).
    pub events: idm_bus::Events,
    pub operator_token: secrecy::SecretString,
    /// The plan of accounts without one of their own.
    pub default_plan: idm_core::AccountPlan,
    /// Looks custom domains' TXT records up (`ACCOUNT_DNS_RESOLVER`).
    pub dns: hickory_resolver::Resolver<hickory_resolver::name_server::TokioConnectionProvider>,
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let db = Db::connect(config.database_url(), config.pool_size)?.named("account");
    idm_db::migrate(&db, "account", &migrations::ACCOUNT).await?;
    let bus = Bus::connect(&config.basics, idm_bus::Identity::Account).await?;
    let events = idm_bus::Events::ensure(&bus).await?;
    let state = Arc::new(State {
        db: db.clone(),
        bus: bus.clone(),
        events,
        operator_token: config.operator_token.clone(),
        default_plan: config.default_plan.clone(),
        dns: domains::resolver(config.dns_resolver)?,
    });
    let handlers = Handlers::new()
        .on(audit::forget_audit_networks)
        .on(handlers::resolve_key)
        .on(handlers::get_issuer)
        .on(handlers::update_issuer)
        .on(handlers::create_issuer)
        .on(handlers::create_api_key)
        .on(handlers::list_api_keys)
        .on(handlers::revoke_api_key)
        .on(domains::resolve_host)
        .on(domains::add_domain)
        .on(domains::list_domains)
        .on(domains::remove_domain)
        .on(domains::verify_domain)
        .on(audit::list_audit_events);
    let serving = bus
        .serve(handlers, Arc::clone(&state), shutdown.clone())
        .await?;

    let audit = audit::spawn_consumer(&state, shutdown.clone()).await?;
    let ready = idm_telemetry::all_of(vec![db.probe(), bus.probe()]);
    let router = idm_telemetry::with_http_layers(
        idm_telemetry::ops_routes("account", ready).merge(admin_http::routes(state)),
        idm_telemetry::Surface::internal("account"),
    );
    let (http_addr, http) =
        idm_telemetry::serve_http(config.basics.http_addr, router, shutdown).await?;
    tracing::info!(%http_addr, "account started");
    Ok(Running::new(
        http_addr,
        vec![("bus", serving), ("audit", audit), ("http", http)],
    ))
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown.clone())
        .await?
        .wait(&shutdown)
        .await?;
    Ok(())
}
