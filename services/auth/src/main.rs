#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = idm_telemetry::init_tracing("auth")?;
    let config = idm_auth::Config::from_env()?;
    idm_auth::run(config, idm_telemetry::shutdown_on_signal()).await?;
    Ok(())
}
