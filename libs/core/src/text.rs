//! Bounded free-text fields (names, labels): trimmed, length-limited, no
//! control characters, so nothing over-long or invisible reaches a store.

use crate::ApiError;
use serde::{Deserialize, Serialize};

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_METADATA_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(field: &str, raw: &str) -> Result<Self, ApiError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(ApiError::validation(format!("{field} must not be empty")));
        }
        if trimmed.chars().count() > MAX_NAME_CHARS {
            return Err(ApiError::validation(format!(
                "{field} must be at most {MAX_NAME_CHARS} characters"
            )));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(ApiError::validation(format!(
                "{field} must not contain control characters"
            )));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DisplayName {
    type Error = ApiError;
    fn try_from(raw: String) -> Result<Self, ApiError> {
        Self::parse("name", &raw)
    }
}

impl From<DisplayName> for String {
    fn from(name: DisplayName) -> String {
        name.0
    }
}

/// User metadata: a JSON object of bounded size.
pub fn parse_metadata(value: serde_json::Value) -> Result<serde_json::Value, ApiError> {
    if !value.is_object() {
        return Err(ApiError::validation("metadata must be a JSON object"));
    }
    let size = serde_json::to_vec(&value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(ApiError::validation(format!(
            "metadata must be at most {MAX_METADATA_BYTES} bytes"
        )));
    }
    if !storable(&value) {
        return Err(ApiError::validation(format!(
            "metadata numbers must be at most {MAX_METADATA_NUMBER:e} in magnitude, \
             and its strings and keys must not contain NUL (\\u0000)"
        )));
    }
    Ok(value)
}

/// PostgreSQL keeps a jsonb number as an exact decimal and gives it back
/// written out in full; serde_json cannot read the longest of those back
/// (`-1.7976931348623157e308` returns as a 309-digit integer that overflows),
/// so such metadata would be stored and then never readable. The API
/// fuzzer found it (docs/OPENAPI.md).
const MAX_METADATA_NUMBER: f64 = 1e300;

/// Whether PostgreSQL's jsonb takes the value and gives it back as it was:
/// numbers within `MAX_METADATA_NUMBER`, and no NUL in any string or key
/// (jsonb refuses `\u0000`; the fuzzer found that one too).
fn storable(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) => n.as_f64().is_some_and(|f| f.abs() <= MAX_METADATA_NUMBER),
        Value::String(text) => !text.contains('\0'),
        Value::Array(items) => items.iter().all(storable),
        Value::Object(map) => map
            .iter()
            .all(|(key, item)| !key.contains('\0') && storable(item)),
        Value::Null | Value::Bool(_) => true,
    }
}

/// Passwords: length-bounded (Argon2 input stays cheap to refuse) and not
/// trivially weak. Breached-password checks are a later policy.
pub fn check_password(password: &str) -> Result<(), ApiError> {
    const MIN: usize = 8;
    const MAX: usize = 256;
    let chars = password.chars().count();
    if password.len() > MAX * 4 || chars > MAX {
        return Err(ApiError::validation(format!(
            "password must be at most {MAX} characters"
        )));
    }
    if chars < MIN {
        return Err(ApiError::new(
            crate::ErrorCode::WeakPassword,
            format!("password must be at least {MIN} characters"),
        ));
    }
    let distinct: std::collections::HashSet<char> = password.chars().collect();
    if distinct.len() < 3 {
        return Err(ApiError::new(
            crate::ErrorCode::WeakPassword,
            "password is too simple",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            DisplayName::parse("name", "  Ada ").map(|n| n.0).ok(),
            Some("Ada".into())
        );
        assert!(DisplayName::parse("name", "   ").is_err());
        assert!(DisplayName::parse("name", &"x".repeat(201)).is_err());
        assert!(DisplayName::parse("name", "a\u{0}b").is_err());
    }

    #[test]
    fn metadata_postgres_cannot_give_back_is_refused() {
        let odd = serde_json::json!({"a": [{"b": -1.7976931348623157e308}]});
        assert_eq!(
            parse_metadata(odd).map_err(|e| e.code),
            Err(crate::ErrorCode::ValidationFailed)
        );
        let fine =
            serde_json::json!({"n": 3.5941408082646796e16, "m": 44635330902_i64, "s": 5e-324});
        assert!(parse_metadata(fine).is_ok());
        for nul in [
            serde_json::json!({"a": ["x\u{0}y"]}),
            serde_json::json!({"a": {"k\u{0}": 1}}),
        ] {
            assert!(parse_metadata(nul).is_err());
        }
    }

    #[test]
    fn weak_and_oversized_passwords_are_refused() {
        assert_eq!(
            check_password("short").map_err(|e| e.code),
            Err(crate::ErrorCode::WeakPassword)
        );
        assert_eq!(
            check_password("aaaaaaaaaa").map_err(|e| e.code),
            Err(crate::ErrorCode::WeakPassword)
        );
        assert!(check_password(&"ab1".repeat(100)).is_err());
        assert!(check_password("correct horse battery").is_ok());
    }
}
