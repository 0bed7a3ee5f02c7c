//! The `account` schema: accounts, issuers and API-key hashes.

use crate::Error;
use idm_core::page::Page;
use idm_core::proto::account::{ApiKeyInfo, Issuer, KeyConfig};
use idm_core::{
    AccountId, AccountPlan, AllowedOrigin, ApiError, ApiKeyId, IssuerId, IssuerPolicy, KeyKind,
    KeyMode, Scope,
};
use idm_db::sqlx;
use idm_db::{DbError, GenericClient};

fn json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, Error> {
    serde_json::from_value(value).map_err(|e| ApiError::internal_from(&e).into())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, Error> {
    serde_json::to_value(value).map_err(|e| ApiError::internal_from(&e).into())
}

fn kind_str(kind: KeyKind) -> &'static str {
    match kind {
        KeyKind::Secret => "secret",
        KeyKind::Restricted => "restricted",
    }
}

/// A stored kind this code does not know is an error, never a guess: the
/// guess used to be `secret`, the most privileged kind.
fn parse_kind(raw: &str) -> Result<KeyKind, Error> {
    match raw {
        "secret" => Ok(KeyKind::Secret),
        "restricted" => Ok(KeyKind::Restricted),
        other => {
            tracing::error!(kind = %other.chars().take(32).collect::<String>(), "unknown api key kind in storage");
            Err(ApiError::internal().into())
        }
    }
}

fn parse_mode(raw: &str) -> Result<KeyMode, Error> {
    Ok(KeyMode::parse(raw)?)
}

fn id<T>(parsed: Result<T, ApiError>) -> Result<T, Error> {
    parsed.map_err(|e| ApiError::internal_from(&e).into())
}

pub async fn insert_account(
    db: &impl GenericClient,
    account: &AccountId,
    name: &str,
) -> Result<(), Error> {
    sqlx::query!(
        "INSERT INTO account.accounts (id, name) VALUES ($1, $2)",
        account.as_str(),
        name,
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(())
}

pub async fn insert_issuer(db: &impl GenericClient, issuer: &Issuer) -> Result<(), Error> {
    sqlx::query!(
"INSERT INTO account.issuers (id, account_id, name, mode, allowed_origins, policy, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
issuer.id.as_str(),
issuer.account_id.as_str(),
&issuer.name,
issuer.mode.as_str(),
to_json(&issuer.allowed_origins)?,
to_json(&issuer.policy)?,
issuer.created_at,
)
    .execute(&mut *db.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(())
}

/// An issuer's columns as stored (`id, account_id, name, mode,
/// allowed_origins, policy, created_at`, listed literally in the statements:
/// compile-time checked statements cannot be assembled from constants).
struct IssuerRow {
    id: String,
    account_id: String,
    name: String,
    mode: String,
    allowed_origins: serde_json::Value,
    policy: serde_json::Value,
    created_at: idm_core::Timestamp,
}

fn issuer_from_row(row: IssuerRow) -> Result<Issuer, Error> {
    Ok(Issuer {
        id: id(IssuerId::parse(&row.id))?,
        account_id: id(AccountId::parse(&row.account_id))?,
        name: row.name,
        mode: parse_mode(&row.mode)?,
        allowed_origins: json(row.allowed_origins)?,
        policy: json(row.policy)?,
        created_at: row.created_at,
        plan: None,
    })
}

pub async fn issuer(db: &impl GenericClient, issuer: &IssuerId) -> Result<Option<Issuer>, Error> {
    let row = sqlx::query_as!(
IssuerRow,
"SELECT id, account_id, name, mode, allowed_origins, policy, created_at FROM account.issuers WHERE id = $1",
issuer.as_str(),
)
    .fetch_optional(&mut *db.conn().await)
    .await
    .map_err(DbError::from)?;
    row.map(issuer_from_row).transpose()
}

pub async fn update_issuer(
    db: &impl GenericClient,
    issuer: &IssuerId,
    origins: Option<&Vec<AllowedOrigin>>,
    policy: Option<&IssuerPolicy>,
) -> Result<Option<Issuer>, Error> {
    let origins = origins.map(to_json).transpose()?;
    let policy = policy.map(to_json).transpose()?;
    let row = sqlx::query_as!(
IssuerRow,
"UPDATE account.issuers SET allowed_origins = COALESCE($2, allowed_origins), policy = COALESCE($3, policy)
                 WHERE id = $1 RETURNING id, account_id, name, mode, allowed_origins, policy, created_at",
issuer.as_str(),
origins,
policy,
)
        .fetch_optional(&mut *db.conn().await)
        .await
        .map_err(DbError::from)?;
    row.map(issuer_from_row).transpose()
}

pub async fn insert_key(
    db: &impl GenericClient,
    key: &ApiKeyInfo,
    hash: &str,
) -> Result<(), Error> {
    sqlx::query!(
"INSERT INTO account.api_keys (id, issuer_id, kind, mode, name, key_hash, hint, scopes, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
key.id.as_str(),
key.issuer_id.as_str(),
kind_str(key.kind),
key.mode.as_str(),
&key.name,
hash,
&key.hint,
to_json(&key.scopes)?,
key.created_at,
)
    .execute(&mut *db.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(())
}

/// A key's columns as stored (`id, issuer_id, kind, mode, name, hint,
/// scopes, created_at, revoked_at`, listed literally in the statements).
struct KeyRow {
    id: String,
    issuer_id: String,
    kind: String,
    mode: String,
    name: String,
    hint: String,
    scopes: serde_json::Value,
    created_at: idm_core::Timestamp,
    revoked_at: Option<idm_core::Timestamp>,
}

fn key_from_row(row: KeyRow) -> Result<ApiKeyInfo, Error> {
    Ok(ApiKeyInfo {
        id: id(ApiKeyId::parse(&row.id))?,
        issuer_id: id(IssuerId::parse(&row.issuer_id))?,
        kind: parse_kind(&row.kind)?,
        mode: parse_mode(&row.mode)?,
        name: row.name,
        hint: row.hint,
        scopes: json::<Vec<Scope>>(row.scopes)?,
        created_at: row.created_at,
        revoked_at: row.revoked_at,
    })
}

/// A page of the issuer's keys, newest first, after the key
/// `starting_after` (another issuer's, an unknown or a malformed id is
/// `not_found`, as for every list: LIFECYCLE.md "Lists"); one row more
/// than the page tells whether more follow.
pub async fn list_keys(
    db: &impl GenericClient,
    issuer: &IssuerId,
    page: &Page,
) -> Result<(Vec<ApiKeyInfo>, bool), Error> {
    let mut conn = db.conn().await;
    let (after_at, after_id) = match &page.starting_after {
        None => (None, None),
        Some(raw) => {
            let id = ApiKeyId::parse(raw).map_err(|_| ApiError::not_found("api key"))?;
            let at = sqlx::query_scalar!(
                "SELECT created_at FROM account.api_keys WHERE id = $1 AND issuer_id = $2",
                id.as_str(),
                issuer.as_str(),
            )
            .fetch_optional(&mut *conn)
            .await
            .map_err(DbError::from)?
            .ok_or_else(|| ApiError::not_found("api key"))?;
            (Some(at), Some(id))
        }
    };
    let rows = sqlx::query_as!(
KeyRow,
"SELECT id, issuer_id, kind, mode, name, hint, scopes, created_at, revoked_at FROM account.api_keys
             WHERE issuer_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
             ORDER BY created_at DESC, id DESC LIMIT $4",
issuer.as_str(),
after_at,
after_id.as_ref().map(ApiKeyId::as_str),
page.fetch(),
)
    .fetch_all(&mut *conn)
    .await
    .map_err(DbError::from)?;
    let keys = rows
        .into_iter()
        .map(key_from_row)
        .collect::<Result<_, _>>()?;
    Ok(page.cut(keys))
}

/// Revokes a live key of `issuer`; another issuer's key id is not found.
pub async fn revoke_key(
    db: &impl GenericClient,
    issuer: &IssuerId,
    key: &ApiKeyId,
) -> Result<Option<(ApiKeyInfo, String)>, Error> {
    let row = sqlx::query!(
"UPDATE account.api_keys SET revoked_at = now()
                 WHERE id = $1 AND issuer_id = $2 AND revoked_at IS NULL
                 RETURNING id, issuer_id, kind, mode, name, hint, scopes, created_at, revoked_at, key_hash",
key.as_str(),
issuer.as_str(),
)
    .fetch_optional(&mut *db.conn().await)
    .await
    .map_err(DbError::from)?;
    row.map(|r| {
        let key = KeyRow {
            id: r.id,
            issuer_id: r.issuer_id,
            kind: r.kind,
            mode: r.mode,
            name: r.name,
            hint: r.hint,
            scopes: r.scopes,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        };
        Ok((key_from_row(key)?, r.key_hash))
    })
    .transpose()
}

/// The live key with this hash, joined with its issuer's settings and its
/// account's plan (`default_plan` when the operator set none).
pub async fn resolve_key(
    db: &impl GenericClient,
    hash: &str,
    default_plan: &AccountPlan,
) -> Result<Option<KeyConfig>, Error> {
    let row = sqlx::query!(
"SELECT k.id AS key_id, i.account_id, i.id AS issuer_id, i.mode AS issuer_mode, i.name AS issuer_name, k.kind, k.mode,
                    k.scopes, i.allowed_origins, i.policy, a.plan
             FROM account.api_keys k JOIN account.issuers i ON i.id = k.issuer_id
             JOIN account.accounts a ON a.id = i.account_id
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
hash,
)
    .fetch_optional(&mut *db.conn().await)
    .await
    .map_err(DbError::from)?;
    row.map(|r| {
        Ok(KeyConfig {
            key_id: id(ApiKeyId::parse(&r.key_id))?,
            account_id: id(AccountId::parse(&r.account_id))?,
            issuer_id: id(IssuerId::parse(&r.issuer_id))?,
            issuer_mode: parse_mode(&r.issuer_mode)?,
            issuer_name: r.issuer_name,
            kind: parse_kind(&r.kind)?,
            mode: parse_mode(&r.mode)?,
            scopes: json(r.scopes)?,
            allowed_origins: json(r.allowed_origins)?,
            policy: json(r.policy)?,
            plan: plan_or(r.plan, default_plan)?,
        })
    })
    .transpose()
}

fn plan_or(stored: Option<serde_json::Value>, default: &AccountPlan) -> Result<AccountPlan, Error> {
    stored.map_or_else(|| Ok(default.clone()), json)
}

/// An account's plan, and whether the operator set it (`false`: the
/// default); `None` when there is no such account. `lock` holds the
/// account's row until the transaction ends, so issuer creations of one
/// account are counted one at a time.
pub async fn account_plan(
    db: &impl GenericClient,
    account: &AccountId,
    default: &AccountPlan,
    lock: bool,
) -> Result<Option<(AccountPlan, bool)>, Error> {
    let mut conn = db.conn().await;
    let row = if lock {
        sqlx::query_scalar!(
            "SELECT plan FROM account.accounts WHERE id = $1 FOR UPDATE",
            account.as_str()
        )
        .fetch_optional(&mut *conn)
        .await
    } else {
        sqlx::query_scalar!(
            "SELECT plan FROM account.accounts WHERE id = $1",
            account.as_str()
        )
        .fetch_optional(&mut *conn)
        .await
    }
    .map_err(DbError::from)?;
    row.map(|stored| {
        let custom = stored.is_some();
        Ok((plan_or(stored, default)?, custom))
    })
    .transpose()
}

/// Sets an account's plan; `false` when there is no such account.
pub async fn set_plan(
    db: &impl GenericClient,
    account: &AccountId,
    plan: &AccountPlan,
) -> Result<bool, Error> {
    let updated = sqlx::query!(
        "UPDATE account.accounts SET plan = $2 WHERE id = $1",
        account.as_str(),
        to_json(plan)?,
    )
    .execute(&mut *db.conn().await)
    .await
    .map_err(DbError::from)?
    .rows_affected();
    Ok(updated == 1)
}

/// The ids of every issuer of an account.
pub async fn issuers_of(
    db: &impl GenericClient,
    account: &AccountId,
) -> Result<Vec<IssuerId>, Error> {
    let rows = sqlx::query!(
        "SELECT id FROM account.issuers WHERE account_id = $1",
        account.as_str(),
    )
    .fetch_all(&mut *db.conn().await)
    .await
    .map_err(DbError::from)?;
    rows.iter().map(|r| id(IssuerId::parse(&r.id))).collect()
}

/// A live key as a delegator: what it is and what it holds.
pub struct KeyHolder {
    pub issuer_id: IssuerId,
    pub account_id: AccountId,
    pub kind: KeyKind,
    pub mode: KeyMode,
    pub scopes: Vec<Scope>,
}

/// The live (unrevoked) key with this id, with its issuer's account.
pub async fn key_holder(
    db: &impl GenericClient,
    key: &ApiKeyId,
) -> Result<Option<KeyHolder>, Error> {
    let row = sqlx::query!(
        "SELECT k.issuer_id, i.account_id, k.kind, k.mode, k.scopes
             FROM account.api_keys k JOIN account.issuers i ON i.id = k.issuer_id
             WHERE k.id = $1 AND k.revoked_at IS NULL",
        key.as_str(),
    )
    .fetch_optional(&mut *db.conn().await)
    .await
    .map_err(DbError::from)?;
    row.map(|r| {
        Ok(KeyHolder {
            issuer_id: id(IssuerId::parse(&r.issuer_id))?,
            account_id: id(AccountId::parse(&r.account_id))?,
            kind: parse_kind(&r.kind)?,
            mode: parse_mode(&r.mode)?,
            scopes: json(r.scopes)?,
        })
    })
    .transpose()
}

/// A custom domain's columns as stored.
pub struct DomainRow {
    pub domain: String,
    pub cookie_domain: Option<String>,
    pub token: String,
    pub created_at: idm_core::Timestamp,
    pub verified_at: Option<idm_core::Timestamp>,
}

/// Registers `domain` for `issuer`; `None` when another issuer (or this
/// one) already holds it.
pub async fn insert_domain(
    db: &impl GenericClient,
    issuer: &IssuerId,
    domain: &str,
    cookie_domain: Option<&str>,
    token: &str,
) -> Result<Option<DomainRow>, Error> {
    let row = sqlx::query_as!(
        DomainRow,
        "INSERT INTO account.issuer_domains (domain, issuer_id, cookie_domain, token)
             VALUES ($1, $2, $3, $4) ON CONFLICT (domain) DO NOTHING
             RETURNING domain, cookie_domain, token, created_at, verified_at",
        domain,
        issuer.as_str(),
        cookie_domain,
        token,
    )
    .fetch_optional(&mut *db.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(row)
}

pub async fn list_domains(
    db: &impl GenericClient,
    issuer: &IssuerId,
) -> Result<Vec<DomainRow>, Error> {
    let rows = sqlx::query_as!(
        DomainRow,
        "SELECT domain, cookie_domain, token, created_at, verified_at
             FROM account.issuer_domains WHERE issuer_id = $1 ORDER BY domain",
        issuer.as_str(),
    )
    .fetch_all(&mut *db.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(rows)
}

/// The issuer's own domain; another issuer's is not found.
pub async fn domain_of(
    db: &impl GenericClient,
    issuer: &IssuerId,
    domain: &str,
) -> Result<Option<DomainRow>, Error> {
    let row = sqlx::query_as!(
        DomainRow,
        "SELECT domain, cookie_domain, token, created_at, verified_at
             FROM account.issuer_domains WHERE domain = $1 AND issuer_id = $2",
        domain,
        issuer.as_str(),
    )
    .fetch_optional(&mut *db.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(row)
}

pub async fn remove_domain(
    db: &impl GenericClient,
    issuer: &IssuerId,
    domain: &str,
) -> Result<Option<DomainRow>, Error> {
    let row = sqlx::query_as!(
        DomainRow,
        "DELETE FROM account.issuer_domains WHERE domain = $1 AND issuer_id = $2
             RETURNING domain, cookie_domain, token, created_at, verified_at",
        domain,
        issuer.as_str(),
    )
    .fetch_optional(&mut *db.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(row)
}

pub async fn mark_domain_verified(
    db: &impl GenericClient,
    issuer: &IssuerId,
    domain: &str,
) -> Result<Option<DomainRow>, Error> {
    let row = sqlx::query_as!(
        DomainRow,
        "UPDATE account.issuer_domains SET verified_at = COALESCE(verified_at, now())
             WHERE domain = $1 AND issuer_id = $2
             RETURNING domain, cookie_domain, token, created_at, verified_at",
        domain,
        issuer.as_str(),
    )
    .fetch_optional(&mut *db.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(row)
}

/// The issuer a verified custom domain serves, with its cookie `Domain`.
pub async fn verified_domain(
    db: &impl GenericClient,
    domain: &str,
) -> Result<Option<(IssuerId, Option<String>)>, Error> {
    let row = sqlx::query!(
        "SELECT issuer_id, cookie_domain FROM account.issuer_domains
             WHERE domain = $1 AND verified_at IS NOT NULL",
        domain,
    )
    .fetch_optional(&mut *db.conn().await)
    .await
    .map_err(DbError::from)?;
    row.map(|r| Ok((id(IssuerId::parse(&r.issuer_id))?, r.cookie_domain)))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_stored_kind_is_an_error_not_the_strongest_kind() {
        assert!(matches!(parse_kind("secret"), Ok(KeyKind::Secret)));
        assert!(matches!(parse_kind("restricted"), Ok(KeyKind::Restricted)));
        for unknown in ["", "admin", "Secret", "publishable", "restricted "] {
            assert!(parse_kind(unknown).is_err(), "{unknown:?}");
        }
    }
}
