// mimalloc instead of glibc malloc: issue 10's profiles showed glibc's
// `_int_free`/`malloc_consolidate` at 19 % of the edge's CPU; see
// docs/PERFORMANCE.md for the before/after.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = idm_telemetry::init_tracing("auth")?;
    let config = idm_auth::Config::from_env()?;
    idm_auth::run(config, idm_telemetry::shutdown_on_signal()).await?;
    Ok(())
}
