//! Inputs the API fuzzer (ops/api-fuzz.sh) turned up, kept as regressions.

use idm_testkit::Platform;
use reqwest::Method;

/// Metadata with control characters in keys, surrogate-pair escapes and
/// extreme floats: stored or refused, never a server error. It was a 503
/// after five seconds: PostgreSQL stored `-1.7976931348623157e308` as a
/// 309-digit integer that serde_json could not read back, the user-store
/// handler panicked on `row.get` and never answered.
#[tokio::test]
async fn odd_metadata_is_stored_or_refused_never_a_server_error() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let tenant = platform.create_account("Odd").await?;
    let body = r#"{"metadata": {"\u00a5Z\u0080\u00bd\u000b\u0096\u00d1\u0086\u0086": 362, "__main__": true, "\uabe2M\u00e7": [{"\u00b1P\fx\u00e5o\u00f8\u00f8^\u00e0\u0085": -1.7976931348623157e+308, "H": true}, {"fl": "\u00bcJl\u00bb,", "\udabf\udf8e+\udbdb\udd25\u00ff\u00e0+": 3.5941408082646796e+16, "": 44635330902}]}, "email": "0@0.info", "name": "r"}"#;
    let r = platform
        .send_raw("/v1/users", &tenant.secret_key, body.as_bytes().to_vec())
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (422, Some("validation_failed")),
        "{}",
        r.json
    );
    // The rest of it is fine metadata: stored, and read back.
    let fine = r#"{"metadata": {"\u00a5Z\u0080\u00bd\u000b": 362, "\u00b1P\fx": [{"H": true}, {"\udabf\udf8e+\udbdb\udd25": 3.5941408082646796e+16, "": 44635330902}]}, "email": "1@0.info", "name": "r"}"#;
    let created = platform
        .send_raw("/v1/users", &tenant.secret_key, fine.as_bytes().to_vec())
        .await?;
    assert_eq!(created.status, 201, "{}", created.json);
    let id = created.str("/id");
    let read = platform
        .backend(
            Method::GET,
            &format!("/v1/users/{id}"),
            &tenant.secret_key,
            None,
        )
        .await?;
    assert_eq!(read.status, 200, "{}", read.json);
    assert_eq!(read.json["metadata"], created.json["metadata"]);
    Ok(())
}

/// A NUL inside a metadata string: PostgreSQL's jsonb refuses `\u0000`, so
/// the insert failed and the answer was `500 internal`. Now refused up front.
#[tokio::test]
async fn nul_in_metadata_is_refused_not_a_server_error() -> anyhow::Result<()> {
    let platform = Platform::shared().await?;
    let tenant = platform.create_account("Nul").await?;
    for body in [
        r#"{"email": "0@0.net", "metadata": {"a": [["\u0000x", 0.5]]}}"#,
        r#"{"email": "1@0.net", "metadata": {"k\u0000": 1}}"#,
    ] {
        let r = platform
            .send_raw("/v1/users", &tenant.secret_key, body.as_bytes().to_vec())
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (422, Some("validation_failed")),
            "{}",
            r.json
        );
    }
    Ok(())
}
