//! The OpenAPI documents as the edge serves them (docs/OPENAPI.md).

use idm_testkit::Platform;
use reqwest::Method;

fn committed(name: &str) -> anyhow::Result<serde_json::Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name);
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

#[tokio::test]
async fn the_edge_serves_its_documents_without_a_key() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    // Public port: no key, no origin; the committed document.
    let public = platform
        .send(Method::GET, "/openapi.json", &[], None)
        .await?;
    assert_eq!(public.status, 200, "{}", public.json);
    assert_eq!(public.json, committed("openapi.json")?);
    assert_eq!(public.json["openapi"], "3.1.0");
    // The operator routes are not on the public port, nor in its document.
    assert!(public.json["paths"].get("/admin/v1/bans").is_none());
    let bans = platform
        .send(Method::GET, "/admin/v1/bans", &[], None)
        .await?;
    assert_eq!(bans.status, 404);

    // Ops listener: the operator document, also without a token.
    let ops = platform
        .edge_ops(0, Method::GET, "/openapi.json", Some(""))
        .await?;
    assert_eq!(ops.status, 200, "{}", ops.json);
    assert_eq!(ops.json, committed("openapi-ops.json")?);
    Ok(())
}
