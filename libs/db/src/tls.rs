//! TLS to PostgreSQL, chosen by the database URL's libpq-style parameters,
//! which sqlx reads itself (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`;
//! rustls on the ring provider). idmesh only tightens what the modes mean:
//!
//! | `sslmode` | behaviour |
//! |---|---|
//! | absent, `disable` | plain TCP (local development) |
//! | `require`, `verify-ca`, `verify-full` | TLS or no connection; the certificate chain and the host name are verified |
//!
//! Unlike libpq (and sqlx), `require` and `verify-ca` verify the host name
//! too: a connection that does not check whom it talks to protects nothing
//! against an active attacker, so idmesh offers none. For the same reason
//! `prefer` (and `allow`) are refused: sqlx would not verify the certificate
//! of a server that offers TLS. An absent `sslmode` is `disable` rather
//! than libpq's `prefer`, as it always was here.
//!
//! Trusted are Mozilla's roots (webpki-roots, compiled in) and the PEM
//! CA(s) of `sslrootcert=<file>` (sqlx adds them to that store; libpq would
//! trust only them). The system store is deliberately not read: Debian
//! keeps its self-signed "snakeoil" certificate in /etc/ssl/certs, where a
//! system-store loader would pick it up and trust any server using it. A
//! file without a certificate in it is refused at start-up.

use crate::DbError;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use std::str::FromStr;

/// The connect options for `url`, with idmesh's TLS policy applied.
pub(crate) fn connect_options(url: &str) -> Result<PgConnectOptions, DbError> {
    let parsed = url::Url::parse(url).map_err(|e| DbError::Config(e.to_string()))?;
    let mut mode = None;
    let mut root_cert = None;
    for (key, value) in parsed.query_pairs() {
        match key.as_ref() {
            "sslmode" | "ssl-mode" => mode = Some(value.into_owned()),
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" => root_cert = Some(value.into_owned()),
            _ => {}
        }
    }
    let options = PgConnectOptions::from_str(url).map_err(|e| DbError::Config(e.to_string()))?;
    let mode = match mode.as_deref() {
        None | Some("disable") => {
            if root_cert.is_some() {
                return Err(DbError::Config(
                    "sslrootcert is set but sslmode does not ask for TLS".into(),
                ));
            }
            PgSslMode::Disable
        }
        Some("require" | "verify-ca" | "verify-full") => PgSslMode::VerifyFull,
        Some(other) => {
            return Err(DbError::Config(format!(
                "sslmode '{other}': use disable, require, verify-ca or verify-full"
            )))
        }
    };
    if let Some(path) = &root_cert {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| DbError::Config(format!("sslrootcert {path}: {e}")))?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(DbError::Config(format!(
                "sslrootcert {path}: no PEM certificate in it"
            )));
        }
    }
    Ok(options.ssl_mode(mode))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_modes_are_tightened() {
        let mode = |url: &str| connect_options(url).unwrap().get_ssl_mode();
        assert!(matches!(mode("postgres://u@h/db"), PgSslMode::Disable));
        assert!(matches!(
            mode("postgres://u@h/db?sslmode=disable"),
            PgSslMode::Disable
        ));
        for m in ["require", "verify-ca", "verify-full"] {
            assert!(matches!(
                mode(&format!("postgres://u@h/db?sslmode={m}&application_name=x")),
                PgSslMode::VerifyFull
            ));
        }
    }

    #[test]
    fn unverified_modes_and_a_lonely_root_cert_are_refused() {
        for url in [
            "postgres://u@h/db?sslmode=allow-anything",
            "postgres://u@h/db?sslmode=prefer",
            "postgres://u@h/db?sslmode=allow",
            "postgres://u@h/db?sslrootcert=/ca.pem",
            "postgres://u@h/db?sslmode=require&sslrootcert=/nonexistent/ca.pem",
        ] {
            assert!(connect_options(url).is_err(), "{url}");
        }
    }

    #[test]
    fn a_root_cert_file_without_a_certificate_is_refused() {
        let dir = std::env::temp_dir().join(format!("idm-db-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let url = format!(
            "postgres://u@h/db?sslmode=require&sslrootcert={}",
            empty.display()
        );
        let refused = connect_options(&url).map(|_| ()).unwrap_err();
        assert!(
            refused.to_string().contains("no PEM certificate"),
            "{refused}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
