//! Helpers shared by the end-to-end suites (second factors, step-up,
//! takeover, sessions, revocation, session keys, passwordless, fair share).

use idm_testkit::{Platform, Response, Tenant};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use totp_rs::{Algorithm, Builder, Secret};

pub const ORIGIN: &str = "https://app.example.com";
pub const PASSWORD: &str = "correct horse battery";
pub const MAIL_WAIT: Duration = Duration::from_secs(20);

pub fn code_at(secret_base32: &str, unix: i64) -> anyhow::Result<String> {
    let secret = Secret::try_from_base32(secret_base32).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let totp = Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(secret)
        .build_noncompliant();
    Ok(totp.generate(u64::try_from(unix)?).to_string())
}

/// A six-digit code that is valid at none of the steps around `unix`.
pub fn wrong_totp(secret_base32: &str, unix: i64) -> anyhow::Result<String> {
    let valid: Vec<String> = [-30, 0, 30]
        .iter()
        .map(|d| code_at(secret_base32, unix + d))
        .collect::<anyhow::Result<_>>()?;
    Ok((0..10)
        .map(|d| format!("{d}{d}{d}{d}{d}{d}"))
        .find(|c| !valid.contains(c))
        .unwrap_or_default())
}

/// A code that is not `code` (for email and verification codes).
pub fn not(code: &str) -> &'static str {
    if code == "000000" {
        "111111"
    } else {
        "000000"
    }
}

/// A new account whose publishable key is allowed from [`ORIGIN`].
pub async fn tenant(platform: &Platform, name: &str) -> anyhow::Result<Tenant> {
    let tenant = platform.create_account(name).await?;
    platform
        .allow_origins(&tenant, &["app.example.com"])
        .await?;
    Ok(tenant)
}

/// `POST /v1/sessions/verify` with the tenant's secret key, on edge `replica`.
pub async fn verify(
    platform: &Platform,
    replica: usize,
    tenant: &Tenant,
    token: &str,
) -> anyhow::Result<Response> {
    let auth = format!("Bearer {}", tenant.secret_key);
    platform
        .send_to(
            replica,
            Method::POST,
            "/v1/sessions/verify",
            &[("authorization", &auth)],
            Some(json!({ "session_token": token })),
        )
        .await
}

pub async fn post(
    platform: &Platform,
    tenant: &Tenant,
    path: &str,
    session: Option<&str>,
    body: Value,
) -> anyhow::Result<Response> {
    platform
        .client_call(0, tenant, Method::POST, path, session, Some(body))
        .await
}

pub async fn call(
    platform: &Platform,
    tenant: &Tenant,
    method: Method,
    path: &str,
    session: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<Response> {
    platform
        .client_call(0, tenant, method, path, session, body)
        .await
}

pub async fn set_policy(platform: &Platform, tenant: &Tenant, policy: Value) -> anyhow::Result<()> {
    let r = platform
        .backend(
            Method::PATCH,
            "/v1/issuer",
            &tenant.secret_key,
            Some(json!({ "policy": policy })),
        )
        .await?;
    anyhow::ensure!(r.status == 200, "policy: {} {}", r.status, r.json);
    Ok(())
}

/// A signed-up user with TOTP enabled.
pub struct Enrolled {
    pub email: String,
    pub user_id: String,
    pub session: String,
    pub secret: String,
    pub backup_codes: Vec<String>,
}

pub async fn user_with_totp(
    platform: &Platform,
    tenant: &Tenant,
    email: &str,
) -> anyhow::Result<Enrolled> {
    let signed_up = platform
        .sign_up(tenant, ORIGIN, None, email, PASSWORD)
        .await?;
    anyhow::ensure!(signed_up.status == 201, "sign-up: {}", signed_up.json);
    let session = signed_up.str("/session_token");
    let enrolled = post(
        platform,
        tenant,
        "/v1/client/mfa/totp",
        Some(&session),
        json!({}),
    )
    .await?;
    anyhow::ensure!(enrolled.status == 200, "enroll: {}", enrolled.json);
    let secret = enrolled.str("/secret");
    let code = code_at(&secret, platform.clock.unix())?;
    let confirmed = post(
        platform,
        tenant,
        "/v1/client/mfa/totp/confirm",
        Some(&session),
        json!({ "code": code }),
    )
    .await?;
    anyhow::ensure!(confirmed.status == 200, "confirm: {}", confirmed.json);
    // The confirming step is used up; later codes come from later steps.
    platform.clock.advance(30);
    Ok(Enrolled {
        email: email.to_owned(),
        user_id: signed_up.str("/user/id"),
        session,
        secret,
        backup_codes: strings(&confirmed.json["backup_codes"]),
    })
}

pub fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A password sign-in that stops at `mfa_required`: its MFA token.
pub async fn mfa_token(
    platform: &Platform,
    tenant: &Tenant,
    email: &str,
) -> anyhow::Result<String> {
    let r = platform.sign_in(tenant, ORIGIN, email, PASSWORD).await?;
    anyhow::ensure!(
        r.status == 401 && r.code() == Some("mfa_required"),
        "sign-in: {} {}",
        r.status,
        r.json
    );
    Ok(r.str("/error/mfa_token"))
}

pub async fn verify_totp(
    platform: &Platform,
    tenant: &Tenant,
    token: &str,
    code: &str,
) -> anyhow::Result<Response> {
    post(
        platform,
        tenant,
        "/v1/client/mfa/verify",
        None,
        json!({ "mfa_token": token, "code": code }),
    )
    .await
}

/// Sends an email code to `email` and returns it (the `nth` mail to it).
pub async fn email_code(
    platform: &Platform,
    tenant: &Tenant,
    email: &str,
    nth: usize,
) -> anyhow::Result<String> {
    let r = post(
        platform,
        tenant,
        "/v1/client/email_codes",
        None,
        json!({ "email": email }),
    )
    .await?;
    anyhow::ensure!(r.status == 202, "send: {}", r.json);
    let mail = platform.smtp.wait_for(email, nth, MAIL_WAIT).await?;
    idm_testkit::smtp::six_digit_code(&mail).ok_or_else(|| anyhow::anyhow!("no code in {mail}"))
}

/// Every key of this platform in Redis with everything it holds, as text.
pub async fn redis_dump(platform: &Platform) -> anyhow::Result<Vec<(String, String)>> {
    let mut redis = redis::Client::open(idm_testkit::redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", platform.redis_prefix))
        .query_async(&mut redis)
        .await?;
    let mut dump = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut redis).await?;
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "hash" => {
                redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(&mut redis)
                    .await?
            }
            "string" => vec![redis::cmd("GET").arg(&key).query_async(&mut redis).await?],
            "zset" => {
                redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut redis)
                    .await?
            }
            "set" => {
                redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut redis)
                    .await?
            }
            "list" => {
                redis::cmd("LRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut redis)
                    .await?
            }
            _ => Vec::new(),
        };
        let text = values
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect::<Vec<_>>()
            .join("\u{1}");
        dump.push((key, text));
    }
    Ok(dump)
}

/// Fails if anything in this platform's Redis (keys or values) holds the
/// address, in any case, or an unkeyed SHA-256 of it, alone or after the
/// issuer's id (which a list of addresses would reverse).
pub async fn assert_redis_never_holds(
    platform: &Platform,
    issuer: &str,
    address: &str,
) -> anyhow::Result<()> {
    let lower = address.to_ascii_lowercase();
    let local = lower.split('@').next().unwrap_or_default().to_owned();
    let plain_hashes = [
        idm_crypto::sha256_hex(lower.as_bytes()),
        idm_crypto::sha256_hex(format!("{issuer}\n{lower}").as_bytes()),
    ];
    for (key, values) in redis_dump(platform).await? {
        for text in [key.to_ascii_lowercase(), values.to_ascii_lowercase()] {
            anyhow::ensure!(
                !text.contains(&lower)
                    && !text.contains(&local)
                    && plain_hashes.iter().all(|h| !text.contains(h)),
                "Redis key {key} holds the address: {values}"
            );
        }
    }
    Ok(())
}
