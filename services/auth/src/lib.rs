//! auth: end-user authentication flows: sign-up and password sign-in, magic
//! links, email codes, TOTP with backup codes, the stand-alone verification
//! API, and the mail courier that delivers their messages. Passwords are
//! only passed through: the regional store hashes and verifies them.

mod budget;
mod codes;
mod config;
// deletion: what auth forgets of a deleted user
mod deletion;
mod error;
mod existence;
mod handlers;
mod ledger;
mod mail;
mod mfa;
mod notices;
mod passwordless;
mod passwords;
mod recovery;
mod reseal;
mod resets;
mod second_factor;
mod signin;
mod step_up;
mod totp;
mod verifications;

pub use budget::Limits as FailureLimits;
pub use config::{
    Config, DkimAlgorithm, DkimSettings, MailTransport, SmtpConfig, SmtpTls, VerifiedSender,
    DEFAULT_MAIL_FROM,
};
pub use error::Error;

use idm_bus::{Bus, Events, Handlers};
use idm_telemetry::Running;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub(crate) struct State {
    pub bus: Bus,
    pub events: Events,
    pub mail: mail::MailQueue,
    pub codes: codes::Codes,
    pub budgets: Arc<budget::Budgets>,
    pub master: idm_crypto::MasterKeys,
    pub min_sign_in: Duration,
    pub min_verify: Duration,
    pub magic_link_ttl: Duration,
    pub email_code_ttl: Duration,
    pub verification_ttl: Duration,
    pub mfa_token_ttl: Duration,
    pub max_code_attempts: u32,
}

/// How long one Redis command (or connection attempt) may take before it
/// fails as `upstream_unavailable`.
const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, Error> {
    let db = idm_db::Db::connect(config.database_url(), config.pool_size)?;
    ledger::migrate(&db).await?;
    // Bounded waits: without them a command sent as Redis went away could
    // wait forever (found by tests/tests/faults.rs), and the reconnect
    // backoff must stay short so a restarted Redis is used within a second.
    // One node or a cluster, by the URL (idm_cache).
    let redis = idm_cache::Target::parse(config.redis_url())?
        .connect(idm_cache::Settings {
            connection_timeout: REDIS_TIMEOUT,
            response_timeout: REDIS_TIMEOUT,
            retries: 3,
            max_delay: std::time::Duration::from_millis(500),
        })
        .await?;
    let bus = Bus::connect(&config.basics, idm_bus::Identity::Auth).await?;
    let events = Events::ensure(&bus).await?;
    let master =
        idm_crypto::MasterKeys::from_base64(config.master_key(), config.master_key_previous())?;
    let letterhead = mail::Letterhead::new(
        &config.mail_from,
        config.mail_verified_senders.clone(),
        config.mail_dkim.as_ref(),
    )
    .map_err(Error::Mail)?;
    if config.mail_from == config::DEFAULT_MAIL_FROM
        && matches!(config.mail, MailTransport::Smtp(_))
    {
        tracing::warn!(
            from = config::DEFAULT_MAIL_FROM,
            "AUTH_MAIL_FROM is not set: mail goes out from a reserved .example address that receivers will refuse"
        );
    }
    let queue = mail::MailQueue::ensure(&bus, &master, letterhead.platform_name()).await?;
    let transport = mail::Transport::from_config(&config.mail).map_err(Error::Mail)?;
    let courier = mail::spawn_courier(&queue, transport, letterhead, shutdown.clone()).await?;
    let budgets = Arc::new(budget::Budgets::new(
        redis.clone(),
        db.clone(),
        config.redis_prefix.clone(),
        &master,
        config.clock.clone(),
        config.failure_limits,
    ));
    let pruning = budgets.spawn_pruning(shutdown.clone());
    let state = Arc::new(State {
        codes: codes::Codes::new(
            redis.clone(),
            config.redis_prefix.clone(),
            &master,
            config.clock.clone(),
        ),
        budgets: Arc::clone(&budgets),
        bus: bus.clone(),
        events,
        mail: queue,
        master,
        min_sign_in: config.min_sign_in,
        min_verify: config.min_verify,
        magic_link_ttl: config.magic_link_ttl,
        email_code_ttl: config.email_code_ttl,
        verification_ttl: config.verification_ttl,
        mfa_token_ttl: config.mfa_token_ttl,
        max_code_attempts: config.max_code_attempts,
    });
    let handlers = Handlers::new()
        .on(handlers::sign_up)
        .on(handlers::sign_in)
        .on(passwordless::send_magic_link)
        .on(passwordless::verify_magic_link)
        .on(passwordless::send_email_code)
        .on(passwordless::verify_email_code)
        .on(mfa::enroll_totp)
        .on(mfa::confirm_totp)
        .on(mfa::verify_mfa)
        .on(mfa::disable_totp)
        .on(mfa::regenerate_backup_codes)
        .on(passwords::change_password)
        .on(recovery::unlock_factors)
        .on(verifications::send_verification)
        .on(verifications::check_verification)
        .on(resets::send_password_reset)
        .on(resets::confirm_password_reset)
        .on(resets::remove_password)
        .on(resets::start_email_change)
        .on(resets::confirm_email_change)
        .on(deletion::forget_user);
    let resealing = reseal::spawn(Arc::clone(&state), shutdown.clone());
    let serving = bus.serve(handlers, state, shutdown.clone()).await?;
    let redis_probe = idm_telemetry::redis_probe(redis);
    let ready = idm_telemetry::all_of(vec![db.probe(), redis_probe, bus.probe()]);
    let (http_addr, http) = idm_telemetry::serve_http(
        config.basics.http_addr,
        idm_telemetry::ops_router("auth", ready),
        shutdown,
    )
    .await?;
    tracing::info!(%http_addr, "auth started");
    Ok(Running::new(
        http_addr,
        vec![
            ("bus", serving),
            ("courier", courier),
            ("pruning", pruning),
            ("re-seal", resealing),
            ("http", http),
        ],
    ))
}

pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    start(config, shutdown.clone())
        .await?
        .wait(&shutdown)
        .await?;
    Ok(())
}
