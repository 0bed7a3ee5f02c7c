//! Where mail goes: an SMTP relay (lettre, with the configured TLS mode and
//! credentials) or, in development, `.eml` files in a folder.

use crate::config::{MailTransport, SmtpTls};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use std::time::Duration;

pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Files(AsyncFileTransport<Tokio1Executor>),
}

impl Transport {
    pub fn from_config(config: &MailTransport) -> Result<Self, String> {
        match config {
            MailTransport::Files(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("mail folder {}: {e}", dir.display()))?;
                Ok(Transport::Files(AsyncFileTransport::<Tokio1Executor>::new(
                    dir,
                )))
            }
            MailTransport::Smtp(smtp) => {
                let tls = |smtp: &crate::config::SmtpConfig| -> Result<TlsParameters, String> {
                    let mut params = TlsParameters::builder(smtp.host.clone());
                    if let Some(file) = &smtp.ca_file {
                        let pem = std::fs::read(file)
                            .map_err(|e| format!("AUTH_SMTP_CA_FILE {}: {e}", file.display()))?;
                        let ca = Certificate::from_pem(&pem)
                            .map_err(|e| format!("AUTH_SMTP_CA_FILE {}: {e}", file.display()))?;
                        params = params.add_root_certificate(ca);
                    }
                    params.build_rustls().map_err(|e| e.to_string())
                };
                // STARTTLS is required, never opportunistic: a relay that
                // does not offer it (or a stripped offer) fails the send,
                // and the message stays queued.
                let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host);
                let builder = match smtp.tls {
                    SmtpTls::None => builder,
                    SmtpTls::StartTls => builder.tls(Tls::Required(tls(smtp)?)),
                    SmtpTls::Tls => builder.tls(Tls::Wrapper(tls(smtp)?)),
                };
                let mut builder = builder
                    .port(smtp.port)
                    .timeout(Some(Duration::from_secs(15)));
                if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
                    builder = builder.credentials(Credentials::new(
                        user.clone(),
                        password.expose_secret().to_owned(),
                    ));
                }
                Ok(Transport::Smtp(builder.build()))
            }
        }
    }

    pub async fn send(&self, message: Message) -> Result<(), String> {
        match self {
            Transport::Smtp(smtp) => smtp
                .send(message)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Transport::Files(files) => files
                .send(message)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        }
    }
}
