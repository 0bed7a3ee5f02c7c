#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = idm_telemetry::init_tracing("account")?;
    let config = idm_account::Config::from_env()?;
    idm_account::run(config, idm_telemetry::shutdown_on_signal()).await?;
    Ok(())
}
