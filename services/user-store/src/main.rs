#[tokio::main]
async fn main() -> anyhow::Result<()> {
    idm_telemetry::init_tracing();
    let config = idm_user_store::Config::from_env()?;
    idm_user_store::run(config, idm_telemetry::shutdown_on_signal()).await?;
    Ok(())
}
