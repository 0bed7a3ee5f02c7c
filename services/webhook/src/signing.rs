//! Endpoint secrets and Standard Webhooks signatures.
//!
//! A secret is `whsec_` followed by the base64 of 32 random bytes; the
//! signature of a delivery is `v1,` followed by the base64 of
//! HMAC-SHA256(secret bytes, `<webhook-id>.<webhook-timestamp>.<body>`).
//! During a rotation's overlap both the new and the old secret sign, their
//! signatures separated by a space in one `webhook-signature` header, as the
//! specification allows: a receiver accepts the delivery if any matches.

use base64::Engine;
use idm_core::proto::SecretText;
use zeroize::Zeroizing;

pub const SECRET_PREFIX: &str = "whsec_";

/// A fresh secret, as shown to the tenant once.
pub fn new_secret() -> SecretText {
    let bytes = Zeroizing::new(idm_crypto::random_bytes::<32>());
    SecretText::new(format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(*bytes)
    ))
}

/// The key bytes of a `whsec_` secret.
pub fn key_bytes(secret: &str) -> Option<Zeroizing<Vec<u8>>> {
    let body = secret.strip_prefix(SECRET_PREFIX)?;
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()
        .map(Zeroizing::new)
}

/// One `v1,<base64>` signature.
pub fn sign(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut content = Vec::with_capacity(msg_id.len() + body.len() + 24);
    content.extend_from_slice(msg_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.to_string().as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    let mac = idm_crypto::hmac_sha256(key, &content);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac)
    )
}

/// The `webhook-signature` header: one signature per key, space-separated.
pub fn signature_header(
    keys: &[Zeroizing<Vec<u8>>],
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    keys.iter()
        .map(|key| sign(key, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's test vectors.
    #[test]
    fn matches_the_specification_vector() {
        let key = key_bytes("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_or_default();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_prefixed_and_decode() {
        let secret = new_secret();
        assert!(secret.expose().starts_with(SECRET_PREFIX));
        assert_eq!(key_bytes(secret.expose()).map(|k| k.len()), Some(32));
        assert!(key_bytes("nope").is_none());
    }
}
