#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = idm_telemetry::init_tracing("webhook")?;
    let config = idm_webhook::Config::from_env()?;
    idm_webhook::run(config, idm_telemetry::shutdown_on_signal()).await?;
    Ok(())
}
