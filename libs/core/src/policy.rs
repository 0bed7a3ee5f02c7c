//! Per-issuer policy: where users may live and how sessions behave.

use crate::{ApiError, Jurisdiction, Region};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Residency {
    /// Every user lives in an EU region, with no fallback outside it.
    Eu,
}

fn default_session_lifetime() -> u32 {
    600
}

fn default_idle_timeout() -> u32 {
    7 * 24 * 3600
}

fn default_absolute_timeout() -> u32 {
    30 * 24 * 3600
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerPolicy {
    #[serde(default)]
    pub residency: Option<Residency>,
    /// Regions users may be placed in; `None` means all eight.
    #[serde(default)]
    pub allowed_regions: Option<Vec<Region>>,
    /// Where a user goes when neither an explicit region nor a country says.
    #[serde(default)]
    pub default_region: Option<Region>,
    #[serde(default = "default_session_lifetime")]
    pub session_lifetime_seconds: u32,
    /// A session not refreshed for this long can no longer be refreshed.
    #[serde(default = "default_idle_timeout")]
    pub session_idle_timeout_seconds: u32,
    /// No session outlives this, however often it is refreshed.
    #[serde(default = "default_absolute_timeout")]
    pub session_absolute_timeout_seconds: u32,
    /// How long after a rotation the just-rotated refresh token may be
    /// presented again and get the same successor instead of being treated as
    /// reuse. 0 (the default) is strict: any second use compromises the
    /// session. See docs/SESSIONS.md for the trade-off.
    #[serde(default)]
    pub refresh_reuse_leeway_seconds: u32,
    #[serde(default = "yes")]
    pub allow_sign_up: bool,
    #[serde(default)]
    pub require_https_origins: bool,
    /// Password sign-in is refused (as a wrong password would be) until the
    /// account's address has been proven. Off by default; see docs/SECURITY.md
    /// (account pre-hijacking).
    #[serde(default)]
    pub require_verified_email_for_password: bool,
    /// Sign-up of an address that already has an account answers exactly like
    /// a fresh sign-up (with a session that never verifies) and mails the
    /// owner a notice, instead of `409 conflict`. See docs/SECURITY.md.
    #[serde(default)]
    pub hide_account_existence: bool,
    /// The edge guard's limits, bans and email lists (see waf_policy.rs).
    #[serde(default)]
    pub waf: crate::WafPolicy,
    /// The issuer's mail branding: a logo and a sender address (docs/MAIL.md).
    #[serde(default)]
    pub mail: MailBranding,
}

/// How an issuer's mail looks beyond its name (which is the issuer's own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MailBranding {
    /// An `https` URL of a logo shown at the top of the HTML part (at most
    /// 512 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
    /// The address to send from, such as `no-reply@mybrand.com`. It is used
    /// only once the platform's operator has verified its domain for this
    /// issuer (`AUTH_MAIL_VERIFIED_SENDERS`, docs/MAIL.md); until then mail
    /// comes from the platform's own sender, with the issuer's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
}

impl MailBranding {
    pub fn validate(&self) -> Result<(), ApiError> {
        if let Some(logo) = &self.logo_url {
            let parsed = url::Url::parse(logo).ok();
            if logo.len() > 512
                || parsed.as_ref().is_none_or(|u| {
                    u.scheme() != "https" || u.host_str().is_none() || !u.username().is_empty()
                })
            {
                return Err(ApiError::validation(
                    "mail.logo_url must be an https URL of at most 512 characters",
                )
                .with_details(serde_json::json!({"field": "mail.logo_url"})));
            }
        }
        if let Some(sender) = &self.sender {
            let email = crate::Email::parse(sender).map_err(|_| {
                ApiError::validation("mail.sender must be a plain email address")
                    .with_details(serde_json::json!({"field": "mail.sender"}))
            })?;
            if email.as_str() != sender.trim() {
                return Err(
                    ApiError::validation("mail.sender must be a plain email address")
                        .with_details(serde_json::json!({"field": "mail.sender"})),
                );
            }
        }
        Ok(())
    }
}

impl Default for IssuerPolicy {
    fn default() -> Self {
        Self {
            residency: None,
            allowed_regions: None,
            default_region: None,
            session_lifetime_seconds: default_session_lifetime(),
            session_idle_timeout_seconds: default_idle_timeout(),
            session_absolute_timeout_seconds: default_absolute_timeout(),
            refresh_reuse_leeway_seconds: 0,
            allow_sign_up: true,
            require_https_origins: false,
            require_verified_email_for_password: false,
            hide_account_existence: false,
            waf: crate::WafPolicy::default(),
            mail: MailBranding::default(),
        }
    }
}

impl IssuerPolicy {
    pub fn validate(&self) -> Result<(), ApiError> {
        self.waf.validate()?;
        self.mail.validate()?;
        if !(60..=86_400).contains(&self.session_lifetime_seconds) {
            return Err(ApiError::validation(
                "session_lifetime_seconds must be between 60 and 86400",
            ));
        }
        if self.refresh_reuse_leeway_seconds > 60 {
            return Err(ApiError::validation(
                "refresh_reuse_leeway_seconds must be between 0 and 60",
            ));
        }
        if !(300..=365 * 24 * 3600).contains(&self.session_absolute_timeout_seconds) {
            return Err(ApiError::validation(
                "session_absolute_timeout_seconds must be between 300 and 31536000",
            ));
        }
        if self.session_idle_timeout_seconds < 60
            || self.session_idle_timeout_seconds > self.session_absolute_timeout_seconds
        {
            return Err(ApiError::validation(
                "session_idle_timeout_seconds must be at least 60 and at most the absolute timeout",
            ));
        }
        if let Some(regions) = &self.allowed_regions {
            if regions.is_empty() {
                return Err(ApiError::validation("allowed_regions must not be empty"));
            }
        }
        let permitted = self.permitted_regions();
        if permitted.is_empty() {
            return Err(ApiError::validation(
                "residency eu leaves no allowed region",
            ));
        }
        if let Some(default) = self.default_region {
            if !permitted.contains(&default) {
                return Err(ApiError::validation(
                    "default_region is not one of the permitted regions",
                ));
            }
        }
        Ok(())
    }

    /// The regions this issuer's users may be placed in, in canonical order.
    pub fn permitted_regions(&self) -> Vec<Region> {
        Region::ALL
            .into_iter()
            .filter(|r| {
                self.allowed_regions
                    .as_ref()
                    .is_none_or(|list| list.contains(r))
            })
            .filter(|r| match self.residency {
                Some(Residency::Eu) => r.jurisdiction() == Jurisdiction::Eu,
                None => true,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eu_residency_narrows_regions_and_checks_the_default() {
        let mut p = IssuerPolicy {
            residency: Some(Residency::Eu),
            ..IssuerPolicy::default()
        };
        assert_eq!(p.permitted_regions(), vec![Region::Weur, Region::Eeur]);
        p.default_region = Some(Region::Wnam);
        assert!(p.validate().is_err());
        p.default_region = Some(Region::Eeur);
        assert!(p.validate().is_ok());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let parsed: Result<IssuerPolicy, _> = serde_json::from_str(r#"{"residncy":"eu"}"#);
        assert!(parsed.is_err());
    }
}
