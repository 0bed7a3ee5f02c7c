#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = idm_telemetry::init_tracing("edge-guard")?;
    let config = idm_edge_guard::Config::from_env()?;
    idm_edge_guard::run(config, idm_telemetry::shutdown_on_signal()).await?;
    Ok(())
}
