//! Bus operations of the control plane.

use crate::provisioning::{self, NewIssuer};
use crate::{delegation, storage, Error, State};
use idm_core::proto::account::*;
use idm_core::proto::event::{self, DomainEvent};
use idm_core::text::DisplayName;
use idm_core::ApiError;
use std::sync::Arc;

pub async fn resolve_key(state: Arc<State>, req: ResolveKey) -> Result<Resolved, Error> {
    if req.key_hash.len() != 64 || !req.key_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Resolved { key: None });
    }
    let client = state.db.get().await?;
    Ok(Resolved {
        key: storage::resolve_key(&client, &req.key_hash, &state.default_plan).await?,
    })
}

/// The issuer with its account's plan, so a tenant sees the ceilings of
/// its own limits.
pub async fn get_issuer(state: Arc<State>, req: IssuerRef) -> Result<Issuer, Error> {
    let client = state.db.get().await?;
    let mut issuer = storage::issuer(&client, &req.issuer_id)
        .await?
        .ok_or_else(|| ApiError::not_found("issuer"))?;
    issuer.plan = storage::account_plan(&client, &issuer.account_id, &state.default_plan, false)
        .await?
        .map(|(plan, _)| plan);
    Ok(issuer)
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id))]
pub async fn update_issuer(state: Arc<State>, req: UpdateIssuer) -> Result<Issuer, Error> {
    if let Some(policy) = &req.policy {
        policy.validate()?;
    }
    if req.allowed_origins.as_ref().is_some_and(|o| o.len() > 100) {
        return Err(ApiError::validation("at most 100 allowed origins").into());
    }
    let client = state.db.get().await?;
    if let Some(policy) = &req.policy {
        // The tenant's limits stay at or below its account's plan.
        let current = storage::issuer(&client, &req.issuer_id)
            .await?
            .ok_or_else(|| ApiError::not_found("issuer"))?;
        let (plan, _) =
            storage::account_plan(&client, &current.account_id, &state.default_plan, false)
                .await?
                .ok_or_else(|| ApiError::not_found("account"))?;
        plan.admits(current.mode, &current.policy.waf, &policy.waf)?;
    }
    let issuer = storage::update_issuer(
        &client,
        &req.issuer_id,
        req.allowed_origins.as_ref(),
        req.policy.as_ref(),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("issuer"))?;
    broadcast_change(&state, &issuer.id, None).await;
    let mut fields = Vec::new();
    if req.allowed_origins.is_some() {
        fields.push("allowed_origins".to_owned());
    }
    if req.policy.is_some() {
        fields.push("policy".to_owned());
    }
    publish(
        &state,
        &issuer.id,
        DomainEvent::IssuerUpdated(event::IssuerUpdated { fields }),
    )
    .await;
    Ok(issuer)
}

fn key_changed(info: &ApiKeyInfo) -> event::ApiKeyChanged {
    event::ApiKeyChanged {
        key_id: info.id.clone(),
        kind: info.kind,
    }
}

/// Publishes an event about a change already committed: a failure is
/// logged rather than returned, so the caller is not told that a change
/// which happened failed.
pub(crate) async fn publish(state: &State, issuer: &idm_core::IssuerId, event: DomainEvent) {
    let event_type = event.event_type();
    if let Err(e) = state.events.publish(issuer, event).await {
        tracing::error!(%issuer, event_type, code = %e.code, "event not published");
    }
}

#[tracing::instrument(skip_all, fields(account = %req.account_id, by = %req.created_by))]
pub async fn create_issuer(state: Arc<State>, req: CreateIssuer) -> Result<CreatedIssuer, Error> {
    let name = DisplayName::parse("name", &req.name)?;
    let creator = {
        let client = state.db.get().await?;
        delegation::creator_in_account(&client, &req.created_by, &req.account_id).await?
    };
    delegation::check_issuer_mode(&creator, req.mode)?;
    // Checked here to fail before provisioning, and again when the issuer
    // is stored (under the account's lock) so that concurrent creations
    // cannot both take the last one.
    {
        let client = state.db.get().await?;
        provisioning::check_issuer_allowance(&client, &state.default_plan, &req.account_id).await?;
    }
    let NewIssuer {
        issuer, secret_key, ..
    } = provisioning::create_issuer(
        &state,
        &req.account_id,
        None,
        name.as_str().to_owned(),
        req.mode,
        creator.scopes,
        false,
    )
    .await?;
    Ok(CreatedIssuer { issuer, secret_key })
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, by = %req.created_by))]
pub async fn create_api_key(state: Arc<State>, req: CreateApiKey) -> Result<CreatedApiKey, Error> {
    let name = DisplayName::parse("name", &req.name)?;
    let client = state.db.get().await?;
    let creator = delegation::creator_in_issuer(&client, &req.created_by, &req.issuer_id).await?;
    let scopes = delegation::scopes_for_new_key(&creator, req.kind, req.scopes)?;
    let issuer = storage::issuer(&client, &req.issuer_id)
        .await?
        .ok_or_else(|| ApiError::not_found("issuer"))?;
    let (info, key, hash) = provisioning::new_key(
        &issuer.id,
        req.kind,
        issuer.mode,
        name.as_str().to_owned(),
        scopes,
    );
    storage::insert_key(&client, &info, &hash).await?;
    tracing::info!(key = %info.id, "api key created");
    publish(
        &state,
        &issuer.id,
        DomainEvent::ApiKeyCreated(key_changed(&info)),
    )
    .await;
    Ok(CreatedApiKey { info, key })
}

pub async fn list_api_keys(state: Arc<State>, req: ListApiKeys) -> Result<ApiKeyList, Error> {
    let client = state.db.get().await?;
    let (data, has_more) = storage::list_keys(&client, &req.issuer_id, &req.page).await?;
    Ok(ApiKeyList { data, has_more })
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, key = %req.key_id))]
pub async fn revoke_api_key(state: Arc<State>, req: RevokeApiKey) -> Result<ApiKeyInfo, Error> {
    let client = state.db.get().await?;
    let (info, hash) = storage::revoke_key(&client, &req.issuer_id, &req.key_id)
        .await?
        .ok_or_else(|| ApiError::not_found("api key"))?;
    broadcast_change(&state, &req.issuer_id, Some(hash)).await;
    tracing::info!("api key revoked");
    publish(
        &state,
        &req.issuer_id,
        DomainEvent::ApiKeyRevoked(key_changed(&info)),
    )
    .await;
    Ok(info)
}

/// Tells every edge-guard replica to drop what it cached for the issuer.
pub(crate) async fn broadcast_change(
    state: &State,
    issuer: &idm_core::IssuerId,
    key_hash: Option<String>,
) {
    let subject = state
        .bus
        .broadcast_subject("config.changed", issuer.as_str());
    state
        .bus
        .broadcast(
            subject,
            &ConfigChanged {
                issuer_id: issuer.clone(),
                key_hash,
            },
        )
        .await;
    state.bus.flush().await;
}
