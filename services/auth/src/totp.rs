//! RFC 6238 TOTP with `totp-rs`: SHA-1, 30-second steps, 6 digits, ±1 step.
//! The crate compares codes in constant time and reports the matched step;
//! refusing a step that was already used is ours (the store records it).

use totp_rs::{Algorithm, Builder, Secret, Totp};

pub const DIGITS: u8 = 6;
pub const STEP_SECONDS: u64 = 30;
const SKEW_STEPS: u16 = 1;
pub const SECRET_BYTES: usize = 20;

/// `issuer` names the entry in the authenticator app (the `issuer`
/// parameter and the label's prefix of the otpauth URL, percent-encoded by
/// totp-rs); it matters only for enrollment.
pub fn totp(secret: &[u8], issuer: Option<&str>, account: &str) -> Result<Totp, String> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(DIGITS)
        .with_skew(SKEW_STEPS)
        .with_step_duration(STEP_SECONDS)
        .with_secret(Secret::new(secret.to_vec().into_boxed_slice()))
        .with_issuer(issuer.map(str::to_owned))
        .with_account_name(account)
        .build()
        .map_err(|e| e.to_string())
}

/// The tenant's name as an otpauth issuer: one line of at most 64
/// characters, with no `:` (the label's separator, which totp-rs refuses
/// in an issuer).
pub fn issuer_label(name: &str, fallback: &str) -> String {
    crate::mail::display_name(&name.replace(':', " "), fallback)
}

/// The time step `code` belongs to at `unix_time`, if it is valid then.
pub fn matching_step(totp: &Totp, code: &str, unix_time: i64) -> Option<i64> {
    let time = u64::try_from(unix_time).ok()?;
    totp.check(code, time)
        .and_then(|step| i64::try_from(step).ok())
}

pub fn base32(secret: &[u8]) -> String {
    Secret::new(secret.to_vec().into_boxed_slice()).to_base32()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows (8 digits, 30 s steps).
    #[test]
    fn matches_the_rfc_6238_vectors() -> Result<(), String> {
        let rfc = Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(8)
            .with_skew(0)
            .with_step_duration(30)
            .with_secret(Secret::new(
                b"12345678901234567890".to_vec().into_boxed_slice(),
            ))
            .with_account_name("rfc")
            .build_noncompliant();
        for (time, expected) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(rfc.generate(time).to_string(), expected, "t={time}");
        }
        Ok(())
    }

    #[test]
    fn accepts_one_step_of_skew_and_reports_the_step() -> Result<(), String> {
        let t = totp(&[7u8; SECRET_BYTES], Some("idmesh"), "a@example.com")?;
        let now = 1_700_000_000i64;
        let code = t.generate(now as u64).to_string();
        assert_eq!(matching_step(&t, &code, now), Some(now / 30));
        assert_eq!(matching_step(&t, &code, now + 30), Some(now / 30));
        assert_eq!(matching_step(&t, &code, now + 90), None);
        assert_eq!(matching_step(&t, "12345", now), None);
        assert!(t
            .to_url()
            .map_err(|e| e.to_string())?
            .starts_with("otpauth://totp/"));
        Ok(())
    }

    #[test]
    fn the_issuer_names_the_tenant_percent_encoded() -> Result<(), String> {
        let issuer = issuer_label("Café: Zoë & Co", "idmesh");
        assert_eq!(issuer, "Café Zoë & Co");
        let url = totp(&[7u8; SECRET_BYTES], Some(&issuer), "zoe+1@example.com")?
            .to_url()
            .map_err(|e| e.to_string())?;
        assert!(
            url.starts_with(
                "otpauth://totp/Caf%C3%A9%20Zo%C3%AB%20%26%20Co:zoe%2B1%40example.com?"
            ),
            "{url}"
        );
        assert!(
            url.contains("&issuer=Caf%C3%A9%20Zo%C3%AB%20%26%20Co"),
            "{url}"
        );
        assert_eq!(issuer_label("", "idmesh"), "idmesh");
        Ok(())
    }
}
