//! `user-store` serves one region; `idm-user-store migrate` brings every issuer
//! schema of that region up to date and exits (non-zero if any failed).

// mimalloc instead of glibc malloc: issue 10's profiles showed glibc's
// `_int_free`/`malloc_consolidate` at 19 % of the edge's CPU; see
// docs/PERFORMANCE.md for the before/after.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = idm_telemetry::init_tracing("user-store")?;
    let config = idm_user_store::Config::from_env()?;
    match std::env::args().nth(1).as_deref() {
        None => idm_user_store::run(config, idm_telemetry::shutdown_on_signal()).await?,
        Some("migrate") => {
            let report = idm_user_store::migrate(&config).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            anyhow::ensure!(
                report.failed.is_empty(),
                "{} issuer schemas were not migrated; run again once the cause is fixed",
                report.failed.len()
            );
        }
        Some(other) => anyhow::bail!("unknown command {other:?}; usage: idm-user-store [migrate]"),
    }
    Ok(())
}
