#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = idm_telemetry::init_tracing("user-store")?;
    let config = idm_user_store::Config::from_env()?;
    idm_user_store::run(config, idm_telemetry::shutdown_on_signal()).await?;
    Ok(())
}
