//! TLS to PostgreSQL, chosen by the database URL's libpq-style parameters:
//!
//! | `sslmode` | behaviour |
//! |---|---|
//! | absent, `disable` | plain TCP (local development) |
//! | `prefer` | TLS when the server offers it, plain otherwise; the certificate is verified whenever TLS is used |
//! | `require`, `verify-ca`, `verify-full` | TLS or no connection; the certificate chain and the host name are verified |
//!
//! `sslrootcert=<file>` names the PEM file of the CA(s) to trust; without it
//! the system's roots are used. Unlike libpq, `require` and `verify-ca`
//! verify the host name too: a connection that does not check whom it talks
//! to protects nothing against an active attacker, so idmesh offers none.
//! Both parameters are removed from the URL before tokio-postgres parses it
//! (it knows neither `sslrootcert` nor the `verify-*` modes).

use crate::DbError;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres::config::SslMode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PgTls {
    Off,
    On {
        mode: SslMode,
        root_cert: Option<PathBuf>,
    },
}

/// Splits the TLS parameters off `url`: the URL tokio-postgres should parse
/// (without them) and what they ask for.
pub(crate) fn split_url(url: &str) -> Result<(String, PgTls), DbError> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), PgTls::Off));
    };
    let mut kept = url::form_urlencoded::Serializer::new(String::new());
    let mut mode = None;
    let mut root_cert = None;
    for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "sslmode" => mode = Some(value.into_owned()),
            "sslrootcert" => root_cert = Some(PathBuf::from(value.as_ref())),
            _ => {
                kept.append_pair(&key, &value);
            }
        }
    }
    let kept = kept.finish();
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{kept}")
    };
    let tls = match mode.as_deref() {
        None | Some("disable") => {
            if root_cert.is_some() {
                return Err(DbError::Config(
                    "sslrootcert is set but sslmode does not ask for TLS".into(),
                ));
            }
            PgTls::Off
        }
        Some("prefer") => PgTls::On {
            mode: SslMode::Prefer,
            root_cert,
        },
        Some("require" | "verify-ca" | "verify-full") => PgTls::On {
            mode: SslMode::Require,
            root_cert,
        },
        Some(other) => {
            return Err(DbError::Config(format!(
                "sslmode '{other}': use disable, prefer, require, verify-ca or verify-full"
            )))
        }
    };
    Ok((rest, tls))
}

/// The rustls client configuration: the CAs of `root_cert`, or the system's.
pub(crate) fn client_config(root_cert: Option<&PathBuf>) -> Result<rustls::ClientConfig, DbError> {
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| DbError::Config(format!("sslrootcert {}: {e}", path.display())))?;
            let mut found = 0;
            // rustls' own PEM reader (rustls-pemfile is unmaintained).
            use rustls::pki_types::pem::PemObject as _;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert = cert
                    .map_err(|e| DbError::Config(format!("sslrootcert {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| DbError::Config(format!("sslrootcert {}: {e}", path.display())))?;
                found += 1;
            }
            if found == 0 {
                return Err(DbError::Config(format!(
                    "sslrootcert {}: no PEM certificate in it",
                    path.display()
                )));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A system store may hold certificates rustls rejects; skip them.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(DbError::Config(
                    "sslmode asks for TLS but the system has no CA certificates; set sslrootcert"
                        .into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        let (url, tls) = split_url("postgres://u@h/db").unwrap();
        assert_eq!((url.as_str(), tls), ("postgres://u@h/db", PgTls::Off));
        let (url, tls) = split_url(
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h/db?application_name=x");
        assert_eq!(
            tls,
            PgTls::On {
                mode: SslMode::Require,
                root_cert: Some("/etc/ca.pem".into())
            }
        );
        let (url, tls) = split_url("postgres://u@h/db?sslmode=prefer").unwrap();
        assert_eq!(url, "postgres://u@h/db");
        assert!(matches!(
            tls,
            PgTls::On {
                mode: SslMode::Prefer,
                root_cert: None
            }
        ));
        assert!(matches!(
            split_url("postgres://u@h/db?sslmode=disable").unwrap().1,
            PgTls::Off
        ));
    }

    #[test]
    fn unknown_modes_and_a_lonely_root_cert_are_refused() {
        assert!(split_url("postgres://u@h/db?sslmode=allow-anything").is_err());
        assert!(split_url("postgres://u@h/db?sslrootcert=/ca.pem").is_err());
        assert!(client_config(Some(&PathBuf::from("/nonexistent/ca.pem"))).is_err());
    }

    /// A self-signed test CA (P-256), valid until 2126.
    const CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBiDCCAS+gAwIBAgIUU5hrmaffF2tSve6ifIQrsHV1w30wCgYIKoZIzj0EAwIw\n\
GTEXMBUGA1UEAwwOaWRtZXNoIHRlc3QgY2EwIBcNMjYxMjAyMDEzNzQyWhgPMjEy\n\
NjExMDgwMTM3NDJaMBkxFzAVBgNVBAMMDmlkbWVzaCB0ZXN0IGNhMFkwEwYHKoZI\n\
zj0CAQYIKoZIzj0DAQcDQgAEA7Y4iqElknXUrC0gJqayoZcjCYdWMjlMQH1mmoDZ\n\
q6MMCZpGmPhCQxfieM6S1JjDOd1K6Q5/2P0wVhwqXOUtHqNTMFEwHQYDVR0OBBYE\n\
FHLxVdtGv8prNiSvhkN1/5H+icq8MB8GA1UdIwQYMBaAFHLxVdtGv8prNiSvhkN1\n\
/5H+icq8MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgJGd20/5f\n\
Xt+k7SCKDzLnMxRddksMFTrSV3VPoD6gsg0CIAe0uE47Fej1IhPKlWKlWXoyaAJk\n\
i7eh1TdMiZLWUA2f\n\
-----END CERTIFICATE-----\n";

    #[test]
    fn root_certificates_are_read_from_pem_and_a_file_without_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("idm-db-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bundle = dir.join("bundle.pem");
        // Other sections around the certificate are skipped, as before.
        std::fs::write(
            &bundle,
            format!("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{CA_PEM}"),
        )
        .unwrap();
        assert!(client_config(Some(&bundle)).is_ok());
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let refused = client_config(Some(&empty)).map(|_| ()).unwrap_err();
        assert!(
            refused.to_string().contains("no PEM certificate"),
            "{refused}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
