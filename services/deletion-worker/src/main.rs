#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = idm_telemetry::init_tracing("deletion-worker")?;
    let config = idm_deletion_worker::Config::from_env()?;
    idm_deletion_worker::run(config, idm_telemetry::shutdown_on_signal()).await?;
    Ok(())
}
