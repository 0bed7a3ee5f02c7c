//! What each message says: a subject, a plain-text part and an HTML part
//! with the same words, all in the issuer's name. Everything that comes
//! from outside (the issuer's name, its logo URL, a link's URL) reaches the
//! HTML escaped (`html-escape`); no caller-supplied markup is ever copied.

use crate::notices::Notice;
use html_escape::{encode_double_quoted_attribute, encode_text};

/// Who the message speaks for.
#[derive(Debug, Clone)]
pub struct Brand {
    /// The issuer's display name, cleaned ([`display_name`]).
    pub name: String,
    /// An `https` logo URL (checked when the policy was set, and again here).
    pub logo_url: Option<String>,
}

/// Every kind of message auth sends.
#[derive(Debug, Clone)]
pub enum Letter {
    MagicLink {
        link: String,
        minutes: u64,
    },
    EmailCode {
        code: String,
        minutes: u64,
    },
    VerificationCode {
        code: String,
        minutes: u64,
    },
    Notice(Notice),
    /// A password reset: the code, and a link carrying it when the app gave
    /// one (`idm_reset_code=`).
    PasswordReset {
        code: String,
        link: Option<String>,
        minutes: u64,
    },
    /// Confirms a new address: sent to that address (`idm_email_change_code=`).
    EmailChange {
        code: String,
        link: Option<String>,
        minutes: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The longest display name a message carries (longer names are cut).
const MAX_NAME_CHARS: usize = 64;

/// An issuer name fit for a header and a subject: control characters and
/// runs of white space become one space, at most [`MAX_NAME_CHARS`]
/// characters; `fallback` when nothing is left.
pub fn display_name(raw: &str, fallback: &str) -> String {
    let cleaned: String = raw
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(MAX_NAME_CHARS)
        .collect();
    let cleaned = cleaned.trim().to_owned();
    if cleaned.is_empty() {
        fallback.to_owned()
    } else {
        cleaned
    }
}

/// A URL safe to put in `href`/`src`: `https` (or `http`, for a link into a
/// development app), no credentials, no quotes or spaces left unescaped.
fn web_url(raw: &str, https_only: bool) -> Option<String> {
    let url = url::Url::parse(raw).ok()?;
    let scheme_ok = url.scheme() == "https" || (!https_only && url.scheme() == "http");
    (scheme_ok && url.host_str().is_some() && url.username().is_empty() && url.password().is_none())
        .then(|| url.to_string())
}

/// One paragraph of a message: plain words, or words with a link or a code
/// set apart.
enum Block {
    Para(String),
    /// A button in HTML, the bare URL on a line of its own in text.
    Link {
        label: String,
        url: String,
    },
    /// A one-time code, large in HTML, on a line of its own in text.
    Code(String),
    /// Why the message arrived: after the signature, small in HTML.
    Footer(String),
}

fn notice_subject(notice: Notice) -> &'static str {
    notice.subject()
}

impl Letter {
    fn subject(&self, brand: &Brand) -> String {
        let name = &brand.name;
        match self {
            Letter::MagicLink { .. } => format!("Sign in to {name}"),
            Letter::EmailCode { code, .. } => format!("Your {name} sign-in code: {code}"),
            Letter::VerificationCode { code, .. } => {
                format!("Your {name} verification code: {code}")
            }
            Letter::Notice(notice) => format!("{name}: {}", notice_subject(*notice)),
            Letter::PasswordReset { .. } => format!("Reset your {name} password"),
            Letter::EmailChange { .. } => format!("Confirm your new {name} email address"),
        }
    }

    fn blocks(&self, brand: &Brand) -> Vec<Block> {
        let name = &brand.name;
        let mut blocks = self.own_blocks(name);
        // Why this arrived, in every kind.
        blocks.push(Block::Footer(format!(
            "You received this email because this address was used with {name}. It was sent automatically; replies are not read."
        )));
        blocks
    }

    fn own_blocks(&self, name: &str) -> Vec<Block> {
        match self {
            Letter::MagicLink { link, minutes } => vec![
                Block::Para(format!("Use the link below to sign in to {name}.")),
                Block::Link {
                    label: format!("Sign in to {name}"),
                    url: link.clone(),
                },
                Block::Para(format!(
                    "The link works once and expires in {minutes} minutes. If you did not ask to sign in, ignore this message: nobody can sign in without the link."
                )),
            ],
            Letter::EmailCode { code, minutes } => vec![
                Block::Para(format!("Enter this code to sign in to {name}:")),
                Block::Code(code.clone()),
                Block::Para(format!(
                    "The code expires in {minutes} minutes. If you did not ask to sign in, ignore this message: nobody can sign in without the code."
                )),
            ],
            Letter::VerificationCode { code, minutes } => vec![
                Block::Para(format!("Enter this code to confirm your email address with {name}:")),
                Block::Code(code.clone()),
                Block::Para(format!(
                    "The code expires in {minutes} minutes. If you did not ask for it, ignore this message."
                )),
            ],
            Letter::Notice(notice) => vec![
                Block::Para(format!("This is a security notice about your {name} account.")),
                Block::Para(notice.body().to_owned()),
                Block::Para(format!(
                    "If this was not you, secure your account now and contact {name}'s support."
                )),
            ],
            Letter::PasswordReset {
                code,
                link,
                minutes,
            } => {
                let mut blocks = vec![Block::Para(format!(
                    "Someone asked to reset the password of your {name} account. Use this code to choose a new one:"
                ))];
                blocks.push(Block::Code(code.clone()));
                if let Some(link) = link {
                    blocks.push(Block::Link {
                        label: "Choose a new password".to_owned(),
                        url: link.clone(),
                    });
                }
                blocks.push(Block::Para(format!(
                    "The code works once and expires in {minutes} minutes. If you did not ask for it, ignore this message: your password stays as it is."
                )));
                blocks
            }
            Letter::EmailChange {
                code,
                link,
                minutes,
            } => {
                let mut blocks = vec![Block::Para(format!(
                    "This address was given as the new email address of a {name} account. Use this code to confirm it:"
                ))];
                blocks.push(Block::Code(code.clone()));
                if let Some(link) = link {
                    blocks.push(Block::Link {
                        label: "Confirm this address".to_owned(),
                        url: link.clone(),
                    });
                }
                blocks.push(Block::Para(format!(
                    "The code works once and expires in {minutes} minutes. If you did not ask for this, ignore this message: nothing changes without the code."
                )));
                blocks
            }
        }
    }
}

fn text_part(brand: &Brand, blocks: &[Block]) -> String {
    let mut out = String::from("Hello,\n\n");
    let mut footer = String::new();
    for block in blocks {
        match block {
            Block::Para(words) => out.push_str(words),
            Block::Link { url, .. } => out.push_str(url),
            Block::Code(code) => out.push_str(code),
            Block::Footer(words) => {
                footer.push_str(words);
                footer.push('\n');
                continue;
            }
        }
        out.push_str("\n\n");
    }
    out.push_str(&format!("-- \n{}\n\n{footer}", brand.name));
    out
}

/// The layout's style sheet: mail clients that keep `<style>` get the
/// narrow-screen and dark-mode rules; the rest use the inline styles.
const STYLE: &str = "body { margin: 0; padding: 0; width: 100%; background-color: #f4f5f7; }
table { border-collapse: collapse; }
img { border: 0; outline: none; text-decoration: none; }
a { color: #1f4fd1; }
.container { width: 100%; max-width: 560px; }
.content { padding: 32px; }
.code { font-family: Menlo, Consolas, 'Courier New', monospace; }
.muted { color: #5f6368; font-size: 13px; line-height: 1.5; }
p { margin: 0 0 16px 0; }
.button { display: inline-block; padding: 12px 22px; background-color: #1f4fd1; color: #ffffff !important; text-decoration: none; border-radius: 6px; font-weight: bold; }
.button:hover { background-color: #173fa8; }
.header { margin: 0 0 24px 0; font-size: 20px; font-weight: bold; color: #111111; }
.link { margin: 0 0 16px 0; color: #5f6368; font-size: 13px; word-break: break-all; }
@media only screen and (max-width: 600px) {
  .content { padding: 20px !important; }
  .code { font-size: 26px !important; letter-spacing: 4px !important; }
}
@media (prefers-color-scheme: dark) {
  body, .outer { background-color: #1c1d21 !important; }
  .container { background-color: #2a2b30 !important; }
  .content, .content p, .header, .code { color: #e8e8ea !important; }
  .button { background-color: #4c7bf0 !important; }
  .muted { color: #a9abb3 !important; }
}";

const FONT: &str = "font-family:Arial,Helvetica,sans-serif;";

fn html_part(brand: &Brand, subject: &str, blocks: &[Block]) -> String {
    let name = encode_text(&brand.name);
    let mut body = String::new();
    // The header: the logo (its alt text the name), or the name in words.
    match brand.logo_url.as_deref().and_then(|u| web_url(u, true)) {
        Some(logo) => body.push_str(&format!(
            "<p class=\"header\" style=\"margin:0 0 24px 0\"><img src=\"{}\" alt=\"{}\" height=\"48\" style=\"display:block;height:48px;width:auto;border:0\"></p>\n",
            encode_double_quoted_attribute(&logo),
            encode_double_quoted_attribute(&brand.name),
        )),
        None => body.push_str(&format!(
            "<p class=\"header\" style=\"margin:0 0 24px 0;font-size:20px;font-weight:bold;color:#111111\">{name}</p>\n"
        )),
    }
    body.push_str("<p style=\"margin:0 0 16px 0\">Hello,</p>\n");
    let mut footer = String::new();
    for block in blocks {
        match block {
            Block::Para(words) => body.push_str(&format!(
                "<p style=\"margin:0 0 16px 0\">{}</p>\n",
                encode_text(words)
            )),
            Block::Link { label, url } => match web_url(url, false) {
                Some(url) => {
                    let href = encode_double_quoted_attribute(&url);
                    body.push_str(&format!(
                        "<p style=\"margin:8px 0 24px 0\"><a class=\"button\" href=\"{href}\" style=\"display:inline-block;padding:12px 22px;background-color:#1f4fd1;color:#ffffff;text-decoration:none;border-radius:6px;font-weight:bold\">{}</a></p>\n<p class=\"link\" style=\"margin:0 0 16px 0;color:#5f6368;font-size:13px;word-break:break-all\">{}</p>\n",
                        encode_text(label),
                        encode_text(&url),
                    ));
                }
                None => body.push_str(&format!(
                    "<p style=\"margin:0 0 16px 0\">{}</p>\n",
                    encode_text(url)
                )),
            },
            Block::Code(code) => body.push_str(&format!(
                "<p class=\"code\" style=\"margin:8px 0 24px 0;font-size:30px;font-weight:bold;letter-spacing:6px;color:#111111\">{}</p>\n",
                encode_text(code)
            )),
            Block::Footer(words) => footer.push_str(&format!(
                "<p class=\"muted\" style=\"margin:0 0 8px 0;{FONT}color:#5f6368;font-size:13px\">{}</p>\n",
                encode_text(words)
            )),
        }
    }
    body.push_str(&format!(
        "<p style=\"margin:24px 0 0 0\">-- <br>{name}</p>\n"
    ));
    format!(
        "<!DOCTYPE html>
<html lang=\"en\">
<head>
<meta charset=\"utf-8\">
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<meta name=\"x-apple-disable-message-reformatting\">
<meta name=\"color-scheme\" content=\"light dark\">
<meta name=\"supported-color-schemes\" content=\"light dark\">
<title>{title}</title>
<style>
{STYLE}
</style>
</head>
<body style=\"margin:0;padding:0;width:100%;background-color:#f4f5f7\">
<table role=\"presentation\" class=\"outer\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"width:100%;background-color:#f4f5f7\">
<tr>
<td align=\"center\" style=\"padding:24px 12px\">
<table role=\"presentation\" class=\"container\" width=\"560\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"width:100%;max-width:560px;background-color:#ffffff;border-radius:8px\">
<tr>
<td class=\"content\" style=\"padding:32px;{FONT}font-size:15px;line-height:1.6;color:#222222;text-align:left\">
{body}</td>
</tr>
</table>
<table role=\"presentation\" class=\"container\" width=\"560\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\" style=\"width:100%;max-width:560px\">
<tr>
<td style=\"padding:16px 32px;text-align:left\">
{footer}</td>
</tr>
</table>
</td>
</tr>
</table>
</body>
</html>
",
        title = encode_text(subject)
    )
}

pub fn render(brand: &Brand, letter: &Letter) -> Rendered {
    let subject = letter.subject(brand);
    let blocks = letter.blocks(brand);
    Rendered {
        text: text_part(brand, &blocks),
        html: html_part(brand, &subject, &blocks),
        subject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_for_headers() {
        assert_eq!(
            display_name("  Acme\r\nBcc: x@y.z ", "idmesh"),
            "Acme Bcc: x@y.z"
        );
        assert_eq!(display_name("\u{7}\t", "idmesh"), "idmesh");
        assert_eq!(
            display_name(&"a".repeat(100), "idmesh").len(),
            MAX_NAME_CHARS
        );
    }

    #[test]
    fn markup_from_the_tenant_is_escaped_and_bad_urls_are_dropped() {
        let brand = Brand {
            name: "<b>Evil</b> & \"Co\"".into(),
            logo_url: Some("javascript:alert(1)".into()),
        };
        let out = render(
            &brand,
            &Letter::MagicLink {
                link: "https://app.example.com/cb?a=\"><script>x</script>&idm_magic_code=abc"
                    .into(),
                minutes: 15,
            },
        );
        assert!(!out.html.contains("<b>Evil"), "{}", out.html);
        assert!(!out.html.contains("<script>"), "{}", out.html);
        assert!(!out.html.contains("javascript:"), "{}", out.html);
        assert!(
            out.html.contains("&lt;b&gt;Evil&lt;/b&gt; &amp;"),
            "{}",
            out.html
        );
        let out = render(
            &brand,
            &Letter::MagicLink {
                link: "javascript:alert(1)".into(),
                minutes: 15,
            },
        );
        assert!(!out.html.contains("href=\"javascript"), "{}", out.html);
    }
}
