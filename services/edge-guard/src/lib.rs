//! edge-guard: the only public ingress. Authenticates API keys (checksum,
//! then a cached hash lookup), checks origins for restricted keys and scopes
//! for secret keys, verifies session tokens statelessly, then forwards each
//! call over NATS and maps the reply to HTTP.

mod access;
mod ban_gate;
mod client_ip;
mod config;
mod cookies;
mod cors;
mod error;
mod front_door;
mod hosts;
mod idempotency;
mod key_cache;
mod me_cache;
pub mod openapi;
mod redirect;
mod refresh;
mod revocations;
mod routes;
mod session_keys;
mod verification_lane;
pub mod waf;

pub use access::Access;
pub use config::Config;
pub use error::Error;
pub use routes::{Route, ROUTES};

use idm_bus::Bus;
use idm_core::proto::account::ConfigChanged;
use idm_telemetry::Running;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const SERVICE: &str = "edge-guard";

pub(crate) struct App {
    pub bus: Bus,
    pub config: Config,
    pub keys: key_cache::KeyCache,
    pub sessions: session_keys::SessionKeys,
    pub revocations: revocations::Revocations,
    pub waf: waf::Waf,
    pub idempotency: idempotency::Store,
    pub hosts: hosts::Hosts,
    /// `GET /v1/client/me` answers remembered per session (see `me_cache`).
    pub me_cache: me_cache::MeCache,
}

impl App {
    /// A session token of `key`'s issuer that is validly signed, unexpired,
    /// within the issuer's session lifetime, and not revoked on any replica
    /// (or a 503 when this replica cannot tell).
    pub async fn verify_session(
        &self,
        key: &idm_core::proto::account::KeyConfig,
        token: &str,
    ) -> Result<idm_crypto::session_token::SessionClaims, idm_core::ApiError> {
        use idm_core::{ApiError, ErrorCode};
        let claims = self
            .sessions
            .verify(&key.issuer_id, token, key.policy.session_lifetime_seconds)
            .await?;
        match self
            .revocations
            .check(key.issuer_id.as_str(), claims.sid.as_str(), claims.reg)?
        {
            None => Ok(claims),
            Some(true) => Err(ApiError::new(
                ErrorCode::SessionCompromised,
                "the session was revoked because a refresh token was reused",
            )),
            Some(false) => Err(ApiError::new(
                ErrorCode::SessionRevoked,
                "the session has been revoked",
            )),
        }
    }
}

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let bus = Bus::connect(&config.basics, idm_bus::Identity::EdgeGuard).await?;
    let (waf, waf_tasks) = waf::Waf::start(
        &config.redis_url,
        &config.redis_prefix,
        config.waf.clone(),
        &bus,
        shutdown.clone(),
    )
    .await?;
    let app = Arc::new(App {
        waf,
        keys: key_cache::KeyCache::new(
            bus.clone(),
            config.key_cache_ttl,
            config.key_cache_capacity,
        ),
        sessions: session_keys::SessionKeys::new(
            bus.clone(),
            idm_crypto::KeyTransport::from_base64(config.key_transport_key()).map_err(|e| {
                idm_core::config::ConfigError::Invalid {
                    var: "EDGE_KEY_TRANSPORT_KEY".into(),
                    reason: e.to_string(),
                }
            })?,
        ),
        revocations: revocations::Revocations::new(config.revocation_capacity),
        idempotency: idempotency::Store::new(
            &config.redis_url,
            &config.redis_prefix,
            config.waf.redis_timeout,
        )?,
        hosts: hosts::Hosts::new(
            bus.clone(),
            config.issuer_host_suffix.clone(),
            config.key_cache_ttl,
            config.key_cache_capacity,
        ),
        me_cache: me_cache::MeCache::new(
            config.me_cache_ttl,
            config.me_cache_bytes,
            config.jurisdiction,
        ),
        bus: bus.clone(),
        config: config.clone(),
    });
    let on_change = Arc::clone(&app);
    let listener = bus
        .on_broadcast(
            "config.changed",
            shutdown.clone(),
            move |change: ConfigChanged| {
                let app = Arc::clone(&on_change);
                async move {
                    app.keys.apply(&change).await;
                    app.hosts.forget_all();
                    app.sessions.forget(&change.issuer_id).await;
                }
            },
        )
        .await?;
    let me_cache = app.me_cache.clone();
    let user_changes = bus
        .on_broadcast(
            idm_core::proto::store::USER_CHANGED_TOPIC,
            shutdown.clone(),
            move |change: idm_core::proto::store::UserChanged| {
                me_cache.user_changed(&change.issuer_id, &change.user_id);
                std::future::ready(())
            },
        )
        .await?;
    // Subscribe before loading, so nothing revoked in between is missed.
    let revoked = app.revocations.listen(&app.bus, shutdown.clone()).await?;
    match app.revocations.reload(&app.bus).await {
        Ok(count) => tracing::info!(count, "revocation set loaded"),
        Err(e) => {
            tracing::error!(error = %e, "revocation set not loaded from the regional stores; those regions' sessions are refused until it is")
        }
    }
    // After a reconnect, whatever broadcasts keep fresh may be stale.
    let stale_after_reconnect = Arc::clone(&app);
    let watch = app.revocations.watch(
        bus.clone(),
        move || {
            stale_after_reconnect.sessions.forget_all();
            stale_after_reconnect.keys.forget_all();
            stale_after_reconnect.hosts.forget_all();
            stale_after_reconnect.me_cache.forget_all();
        },
        shutdown.clone(),
    );

    let ready = idm_telemetry::all_of(vec![bus.probe(), app.revocations.probe()]);
    let probes = idm_telemetry::ops_routes(SERVICE, Arc::clone(&ready))
        .route_layer(axum::middleware::from_fn(strip_metrics));
    // Both listeners continue a client's trace and request id only when a
    // trusted proxy sent them (docs/OPERATIONS.md, "Traces").
    let trusted = config.trusted_proxies.clone();
    let surface =
        idm_telemetry::Surface::public(SERVICE, move |peer| client_ip::is_trusted(&trusted, peer));
    let ops = idm_telemetry::with_http_layers(
        idm_telemetry::ops_routes(SERVICE, Arc::clone(&ready))
            .merge(waf::admin::routes(Arc::clone(&app))),
        surface.clone(),
    );
    // A layer added to the public router must also be done by the
    // verification lane, which answers its route in front of the router
    // (`verification_lane.rs` lists what it does).
    let public = routes::router(Arc::clone(&app))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            cors::layer,
        ))
        .merge(probes)
        .layer(axum::extract::DefaultBodyLimit::max(config.max_body_bytes));
    // The ban gate and the verification lane are in front of the router
    // (`front_door.rs`).
    let (http_addr, http) = idm_telemetry::serve_http(
        config.basics.http_addr,
        front_door::in_front_of(
            idm_telemetry::with_http_layers(public, surface.clone()),
            app,
            surface,
        ),
        shutdown.clone(),
    )
    .await?;
    let (ops_addr, ops) = idm_telemetry::serve_http(config.ops_addr, ops, shutdown).await?;
    tracing::info!(%http_addr, %ops_addr, "edge-guard started");
    let mut tasks = vec![
        ("config listener", listener),
        ("revocation listener", revoked),
        ("user change listener", user_changes),
        ("reconnect watch", watch),
        ("http", http),
        ("ops http", ops),
    ];
    tasks.extend(waf_tasks.into_iter().map(|task| ("waf", task)));
    Ok(Running::new(http_addr, tasks).with_ops_addr(ops_addr))
}

/// `/metrics` is served on the internal ops port only, never publicly.
async fn strip_metrics(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if request.uri().path() == "/metrics" {
        return idm_telemetry::http::HttpError(idm_core::ApiError::not_found("route"))
            .into_response_now();
    }
    next.run(request).await
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown.clone())
        .await?
        .wait(&shutdown)
        .await?;
    Ok(())
}
