//! From a queued message to a standard one (RFC 5322 and MIME): `From` in
//! the issuer's name on a verified address, `Message-ID` on the sender's
//! domain, `Date`, `MIME-Version`, a `multipart/alternative` body with
//! UTF-8 plain-text and HTML parts, `Auto-Submitted`, and a DKIM signature
//! when a key is configured. See docs/MAIL.md.

use super::OutgoingMail;
use crate::config::{DkimAlgorithm, DkimSettings, VerifiedSender};
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{Address, Message};
use secrecy::ExposeSecret;

/// Headers the DKIM signature covers (each once in every message). The
/// MIME part headers are part of the signed body.
const SIGNED_HEADERS: [&str; 6] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
];

pub struct Letterhead {
    /// `AUTH_MAIL_FROM`.
    platform: Mailbox,
    verified: Vec<VerifiedSender>,
    dkim: Option<DkimConfig>,
}

impl Letterhead {
    pub fn new(
        from: &str,
        verified: Vec<VerifiedSender>,
        dkim: Option<&DkimSettings>,
    ) -> Result<Self, String> {
        let platform: Mailbox = from.parse().map_err(|e| format!("AUTH_MAIL_FROM: {e}"))?;
        let dkim = dkim
            .map(|settings| {
                let algorithm = match settings.algorithm {
                    DkimAlgorithm::Rsa => DkimSigningAlgorithm::Rsa,
                    DkimAlgorithm::Ed25519 => DkimSigningAlgorithm::Ed25519,
                };
                let key = DkimSigningKey::new(settings.key.expose_secret().trim(), algorithm)
                    .map_err(|e| format!("AUTH_MAIL_DKIM_KEY: {e}"))?;
                Ok::<_, String>(DkimConfig::new(
                    settings.selector.clone(),
                    settings.domain.clone(),
                    key,
                    SIGNED_HEADERS
                        .iter()
                        .map(|h| HeaderName::new_from_ascii_str(h))
                        .collect(),
                    DkimCanonicalization {
                        header: DkimCanonicalizationType::Relaxed,
                        body: DkimCanonicalizationType::Relaxed,
                    },
                ))
            })
            .transpose()?;
        Ok(Self {
            platform,
            verified,
            dkim,
        })
    }

    /// The platform sender's display name (the fallback issuer name).
    pub fn platform_name(&self) -> String {
        self.platform
            .name
            .clone()
            .unwrap_or_else(|| "idmesh".to_owned())
    }

    /// The address mail of `issuer` goes out from: its own sender when the
    /// operator verified that domain for that issuer, the platform's
    /// otherwise.
    pub fn sender_for(&self, issuer: &str, requested: Option<&str>) -> Address {
        requested
            .and_then(|r| r.parse::<Address>().ok())
            .filter(|address| {
                let domain = address.domain().trim_end_matches('.').to_ascii_lowercase();
                self.verified
                    .iter()
                    .any(|v| v.issuer_id == issuer && v.domain == domain)
            })
            .unwrap_or_else(|| self.platform.email.clone())
    }

    pub fn build(&self, mail: &OutgoingMail) -> Result<Message, String> {
        let to: Mailbox = mail.to.parse().map_err(|e| format!("recipient: {e}"))?;
        let address = self.sender_for(&mail.issuer_id, mail.sender.as_deref());
        let name = if mail.from_name.is_empty() {
            self.platform_name()
        } else {
            mail.from_name.clone()
        };
        let message_id = format!("<{}@{}>", mail.id, address.domain());
        let builder = Message::builder()
            .from(Mailbox::new(Some(name), address))
            .to(to)
            .subject(mail.subject.clone())
            .date_now()
            .message_id(Some(message_id))
            // RFC 3834: no out-of-office replies to a machine.
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".to_owned(),
            ));
        let built = if mail.html.is_empty() {
            // Queued by an older release: text only, still with a charset.
            builder.singlepart(SinglePart::plain(mail.text.clone()))
        } else {
            builder.multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
        };
        let mut message = built.map_err(|e| e.to_string())?;
        if let Some(dkim) = &self.dkim {
            message.sign(dkim);
        }
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(verified: Vec<VerifiedSender>) -> Result<Letterhead, String> {
        Letterhead::new("idmesh <no-reply@idmesh.example>", verified, None)
    }

    #[test]
    fn a_tenant_sender_needs_its_domain_verified_for_that_tenant() -> Result<(), String> {
        let head = head(vec![VerifiedSender {
            issuer_id: "iss_a".into(),
            domain: "mybrand.com".into(),
        }])?;
        let platform = "no-reply@idmesh.example";
        assert_eq!(
            head.sender_for("iss_a", Some("hello@MyBrand.com"))
                .to_string(),
            "hello@MyBrand.com"
        );
        // Another tenant naming the same domain, a subdomain, no sender.
        assert_eq!(
            head.sender_for("iss_b", Some("hello@mybrand.com"))
                .to_string(),
            platform
        );
        assert_eq!(
            head.sender_for("iss_a", Some("x@mail.mybrand.com"))
                .to_string(),
            platform
        );
        assert_eq!(
            head.sender_for("iss_a", Some("not an address")).to_string(),
            platform
        );
        assert_eq!(head.sender_for("iss_a", None).to_string(), platform);
        Ok(())
    }
}
