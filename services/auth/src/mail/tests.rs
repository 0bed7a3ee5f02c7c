//! Every kind of message, rendered and built as the courier sends it, then
//! judged by parsers not written here: Python's `email` package under
//! `policy.strict` (tests/mail_check.py) and dkimpy for the DKIM signature.
//!
//! With `IDM_MAIL_SAMPLES_DIR` set, the messages are also written there
//! (ops/mail-spam-check.sh scores them with SpamAssassin).

use super::compose::{display_name, render, Brand};
use super::{Letter, Letterhead, OutgoingMail};
use crate::config::{DkimAlgorithm, DkimSettings, VerifiedSender};
use crate::notices::Notice;
use base64::Engine;
use secrecy::SecretString;
use std::path::{Path, PathBuf};
use std::process::Command;

const NOTICES: [Notice; 9] = [
    Notice::TotpEnabled,
    Notice::TotpReplaced,
    Notice::TotpDisabled,
    Notice::BackupCodesRegenerated,
    Notice::PasswordChanged,
    Notice::TotpLocked,
    Notice::SignUpAttempt,
    Notice::PasswordRemoved,
    Notice::EmailChanged,
];

/// Every kind, with a file-name tag.
fn every_letter() -> Vec<(String, Letter)> {
    let mut all = vec![
        (
            "magic-link".to_owned(),
            Letter::MagicLink {
                link: "https://app.example.com/welcome?from=mail&idm_magic_code=Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg".into(),
                minutes: 15,
            },
        ),
        (
            "email-code".to_owned(),
            Letter::EmailCode {
                code: "402917".into(),
                minutes: 10,
            },
        ),
        (
            "verification-code".to_owned(),
            Letter::VerificationCode {
                code: "731064".into(),
                minutes: 10,
            },
        ),
        (
            "password-reset".to_owned(),
            Letter::PasswordReset {
                code: "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg".into(),
                link: Some("https://app.example.com/reset?idm_reset_code=Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg".into()),
                minutes: 15,
            },
        ),
        (
            "email-change".to_owned(),
            Letter::EmailChange {
                code: "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg".into(),
                link: None,
                minutes: 15,
            },
        ),
    ];
    for notice in NOTICES {
        all.push((
            format!("notice-{notice:?}").to_ascii_lowercase(),
            Letter::Notice(notice),
        ));
    }
    all
}

fn ctx(name: &str, logo: Option<&str>, sender: Option<&str>) -> idm_core::proto::IssuerContext {
    let mut policy = idm_core::IssuerPolicy::default();
    policy.mail.logo_url = logo.map(str::to_owned);
    policy.mail.sender = sender.map(str::to_owned);
    idm_core::proto::IssuerContext {
        issuer_id: idm_core::IssuerId::parse("iss_0000000000000000000000000000000a")
            .unwrap_or_else(|_| idm_core::IssuerId::generate()),
        account_id: idm_core::AccountId::generate(),
        policy,
        issuer_name: name.to_owned(),
    }
}

fn scratch(tag: &str) -> std::io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "idm-mail-{tag}-{}",
        idm_crypto::random_token::<6>()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("openssl (apt-get install openssl): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn read(dir: &Path, file: &str) -> Result<Vec<u8>, String> {
    std::fs::read(dir.join(file)).map_err(|e| format!("{file}: {e}"))
}

/// A throw-away DKIM key: (settings, the TXT record of its public key).
fn dkim_key(dir: &Path, algorithm: DkimAlgorithm) -> Result<(DkimSettings, String), String> {
    let (key, txt) = match algorithm {
        DkimAlgorithm::Rsa => {
            openssl(dir, &["genrsa", "-traditional", "-out", "rsa.pem", "2048"])?;
            openssl(
                dir,
                &[
                    "rsa", "-in", "rsa.pem", "-pubout", "-outform", "DER", "-out", "rsa.pub",
                ],
            )?;
            let pem = String::from_utf8(read(dir, "rsa.pem")?).map_err(|e| e.to_string())?;
            (
                pem,
                format!("v=DKIM1; k=rsa; p={}", b64(&read(dir, "rsa.pub")?)),
            )
        }
        DkimAlgorithm::Ed25519 => {
            openssl(
                dir,
                &[
                    "genpkey",
                    "-algorithm",
                    "ed25519",
                    "-outform",
                    "DER",
                    "-out",
                    "ed.der",
                ],
            )?;
            openssl(
                dir,
                &[
                    "pkey", "-inform", "DER", "-in", "ed.der", "-pubout", "-outform", "DER",
                    "-out", "ed.pub",
                ],
            )?;
            // PKCS#8 and SPKI DER of Ed25519 end with the raw 32 bytes.
            let private = read(dir, "ed.der")?;
            let public = read(dir, "ed.pub")?;
            let tail = |b: &[u8]| b[b.len().saturating_sub(32)..].to_vec();
            (
                b64(&tail(&private)),
                format!("v=DKIM1; k=ed25519; p={}", b64(&tail(&public))),
            )
        }
    };
    let selector = match algorithm {
        DkimAlgorithm::Rsa => "rsa2026",
        DkimAlgorithm::Ed25519 => "ed2026",
    };
    Ok((
        DkimSettings {
            domain: "idmesh.example".into(),
            selector: selector.into(),
            algorithm,
            key: SecretString::from(key),
        },
        txt,
    ))
}

/// Builds every kind for `ctx` with `head` into `dir`; the file paths.
fn write_all(
    head: &Letterhead,
    ctx: &idm_core::proto::IssuerContext,
    dir: &Path,
    prefix: &str,
) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for (tag, letter) in every_letter() {
        let mail = OutgoingMail::compose(ctx, "idmesh", "Zoë Example <zoe@example.org>", &letter);
        let message = head.build(&mail)?;
        let path = dir.join(format!("{prefix}{tag}.eml"));
        std::fs::write(&path, message.formatted()).map_err(|e| e.to_string())?;
        files.push(path);
    }
    Ok(files)
}

/// Runs tests/mail_check.py on `files`.
fn strict_check(
    files: &[PathBuf],
    dkim_dns: &[String],
    expect_name: Option<&str>,
) -> Result<(), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mail_check.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script);
    if let Some(name) = expect_name {
        cmd.arg("--expect-name").arg(name);
    }
    if !dkim_dns.is_empty() {
        cmd.arg("--dkim");
        for entry in dkim_dns {
            cmd.arg("--dns").arg(entry);
        }
    }
    cmd.args(files);
    let out = cmd
        .output()
        .map_err(|e| format!("python3 (needed for the strict mail checks): {e}"))?;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    match out.status.code() {
        Some(0) => Ok(()),
        Some(3) if std::env::var("CI").is_err() => {
            // Only DKIM needs the extra package; CI (ops/test.sh) installs it.
            eprintln!("SKIPPED DKIM verification: {report}");
            strict_check(files, &[], expect_name)
        }
        _ => Err(format!("{report}{}", String::from_utf8_lossy(&out.stderr))),
    }
}

#[test]
fn every_kind_is_a_standard_message_in_the_tenants_name() -> Result<(), String> {
    let dir = scratch("strict").map_err(|e| e.to_string())?;
    let head = Letterhead::new("idmesh <no-reply@idmesh.example>", Vec::new(), None)?;
    // A name with non-ASCII letters, quotes and markup, and a logo.
    let tenant = ctx(
        "Café \"Zoë\" <b>&</b> Co",
        Some("https://cdn.example.com/logo.png?a=1&b=\"2\""),
        None,
    );
    let files = write_all(&head, &tenant, &dir, "")?;
    strict_check(&files, &[], Some("Café \"Zoë\" <b>&</b> Co"))?;
    if let Ok(samples) = std::env::var("IDM_MAIL_SAMPLES_DIR") {
        std::fs::create_dir_all(&samples).map_err(|e| e.to_string())?;
        // Both looks: the name as a heading, and a logo.
        let plain = ctx("Acme Books", None, None);
        write_all(&head, &plain, Path::new(&samples), "")?;
        let logo = ctx("Acme", Some("https://cdn.example.com/acme/logo.png"), None);
        write_all(&head, &logo, Path::new(&samples), "logo-")?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn dkim_signatures_verify_with_an_independent_implementation() -> Result<(), String> {
    for algorithm in [DkimAlgorithm::Rsa, DkimAlgorithm::Ed25519] {
        let dir = scratch("dkim").map_err(|e| e.to_string())?;
        let (settings, txt) = dkim_key(&dir, algorithm)?;
        let dns = format!("{}._domainkey.{}={txt}", settings.selector, settings.domain);
        let head = Letterhead::new(
            "idmesh <no-reply@idmesh.example>",
            Vec::new(),
            Some(&settings),
        )?;
        let files = write_all(&head, &ctx("Acme Books", None, None), &dir, "signed-")?;
        strict_check(&files, std::slice::from_ref(&dns), Some("Acme Books"))?;
        // A message changed after signing no longer verifies.
        let tampered = dir.join("tampered.eml");
        let original = std::fs::read_to_string(&files[1]).map_err(|e| e.to_string())?;
        std::fs::write(&tampered, original.replacen("402917", "402918", 2))
            .map_err(|e| e.to_string())?;
        let refused = strict_check(std::slice::from_ref(&tampered), &[dns], None);
        if std::env::var("CI").is_ok() || refused.is_err() {
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|e| e.contains("does not verify")),
                "{algorithm:?}: a tampered message verified: {refused:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

#[test]
fn a_verified_tenant_sender_is_used_and_message_ids_follow_it() -> Result<(), String> {
    let head = Letterhead::new(
        "idmesh <no-reply@idmesh.example>",
        vec![VerifiedSender {
            issuer_id: ctx("x", None, None).issuer_id.as_str().to_owned(),
            domain: "mybrand.com".into(),
        }],
        None,
    )?;
    let letter = Letter::EmailCode {
        code: "123456".into(),
        minutes: 10,
    };
    let own = ctx("My Brand", None, Some("hello@mybrand.com"));
    let mail = OutgoingMail::compose(&own, "idmesh", "a@example.org", &letter);
    let built = String::from_utf8_lossy(&head.build(&mail)?.formatted()).into_owned();
    assert!(
        built.contains("From: \"My Brand\" <hello@mybrand.com>"),
        "{built}"
    );
    assert!(built.contains("@mybrand.com>\r\n"), "{built}");
    // An unverified domain: the platform's address, still the tenant's name.
    let other = ctx("Other", None, Some("hello@bank.example"));
    let mail = OutgoingMail::compose(&other, "idmesh", "a@example.org", &letter);
    let built = String::from_utf8_lossy(&head.build(&mail)?.formatted()).into_owned();
    assert!(
        built.contains("From: Other <no-reply@idmesh.example>"),
        "{built}"
    );
    assert!(!built.contains("bank.example"), "{built}");
    Ok(())
}

#[test]
fn the_default_sender_is_a_valid_address() -> Result<(), String> {
    let head = Letterhead::new(crate::config::DEFAULT_MAIL_FROM, Vec::new(), None)?;
    assert_eq!(head.platform_name(), "idmesh");
    let email = idm_core::Email::parse("no-reply@idmesh.example").map_err(|e| e.message)?;
    assert_eq!(email.domain(), "idmesh.example");
    Ok(())
}

#[test]
fn rendering_is_deterministic_and_names_the_tenant_everywhere() {
    let brand = Brand {
        name: display_name("Acme Books", "idmesh"),
        logo_url: None,
    };
    for (_, letter) in every_letter() {
        let a = render(&brand, &letter);
        assert_eq!(a, render(&brand, &letter));
        assert!(a.subject.contains("Acme Books"), "{}", a.subject);
        assert!(a.text.contains("Acme Books"), "{}", a.text);
        assert!(a.html.contains("Acme Books"), "{}", a.html);
    }
}
