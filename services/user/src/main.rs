#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = idm_telemetry::init_tracing("user")?;
    let config = idm_user::Config::from_env()?;
    idm_user::run(config, idm_telemetry::shutdown_on_signal()).await?;
    Ok(())
}
