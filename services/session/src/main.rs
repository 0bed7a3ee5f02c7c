#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = idm_telemetry::init_tracing("session")?;
    let config = idm_session::Config::from_env()?;
    idm_session::run(config, idm_telemetry::shutdown_on_signal()).await?;
    Ok(())
}
