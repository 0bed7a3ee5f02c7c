#[tokio::main]
async fn main() -> anyhow::Result<()> {
    idm_telemetry::init_tracing();
    let config = idm_deletion_worker::Config::from_env()?;
    idm_deletion_worker::run(config, idm_telemetry::shutdown_on_signal()).await?;
    Ok(())
}
