#[tokio::main]
async fn main() -> anyhow::Result<()> {
    idm_telemetry::init_tracing();
    let config = idm_user::Config::from_env()?;
    idm_user::run(config, idm_telemetry::shutdown_on_signal()).await?;
    Ok(())
}
