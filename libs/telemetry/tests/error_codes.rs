//! Every error code of the one table (`idm_core::ERROR_CODES`): a unique
//! spelling, a 4xx/5xx status, a message; the edge's HTTP mapping answers
//! that status (with `Retry-After` on every 503); and the documentation
//! (`docs/ERRORS.md`, `docs/openapi.json`) lists it with that status.

#![allow(clippy::panic)]

use axum::response::IntoResponse;
use idm_core::{ApiError, ERROR_CODES};
use idm_telemetry::http::HttpError;
use std::collections::HashSet;

fn doc(path: &str) -> String {
    let path = format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_code_has_a_unique_name_an_error_status_and_a_message() {
    let mut names = HashSet::new();
    for info in ERROR_CODES {
        assert!(names.insert(info.name), "{} twice", info.name);
        assert!(
            info.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{}",
            info.name
        );
        assert!((400..600).contains(&info.status), "{}", info.name);
        assert!(!info.message.trim().is_empty(), "{}", info.name);
        assert_eq!(info.code.as_str(), info.name);
        assert_eq!(info.code.http_status(), info.status);
    }
}

#[test]
fn the_edge_answers_each_code_with_its_status() {
    for info in ERROR_CODES {
        let response = HttpError(ApiError::new(info.code, info.message)).into_response();
        assert_eq!(response.status().as_u16(), info.status, "{}", info.name);
        let retry_after = response.headers().get(http::header::RETRY_AFTER);
        if info.status == 503 {
            assert!(
                retry_after.is_some(),
                "{}: a 503 without Retry-After",
                info.name
            );
        }
        // A 429 or a ban says when only when it knows (`details.retry_after`).
        let told = HttpError(
            ApiError::new(info.code, info.message)
                .with_details(serde_json::json!({ "retry_after": 7 })),
        )
        .into_response();
        assert_eq!(
            told.headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("7"),
            "{}",
            info.name
        );
    }
}

#[test]
fn the_docs_list_every_code_with_its_status() {
    let table = doc("docs/ERRORS.md");
    let mut missing = Vec::new();
    for info in ERROR_CODES {
        let row = format!("| `{}` | {} |", info.name, info.status);
        if !table.contains(&row) {
            missing.push(row);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/ERRORS.md lacks (or has another status for): {missing:#?}"
    );
    // And nothing there that is not a code.
    let documented = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .count();
    assert_eq!(
        documented,
        ERROR_CODES.len(),
        "docs/ERRORS.md has extra rows"
    );

    let openapi: serde_json::Value =
        serde_json::from_str(&doc("docs/openapi.json")).unwrap_or_default();
    let listed: HashSet<&str> = openapi
        .pointer("/components/schemas/ErrorCode/enum")
        .and_then(|e| e.as_array())
        .map(|e| e.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let names: HashSet<&str> = ERROR_CODES.iter().map(|i| i.name).collect();
    assert_eq!(
        listed, names,
        "docs/openapi.json's ErrorCode enum differs (IDM_UPDATE_OPENAPI=1 cargo test -p idm-edge-guard openapi)"
    );
}
