//! Organizations and memberships of an issuer, in the global `directory`
//! schema. Every query names the issuer, so another issuer's organization is
//! simply not found. Memberships hold ids and a role only.

use crate::{directory, Error, State};
use idm_core::ids::OrganizationId;
use idm_core::proto::event::{DomainEvent, MembershipChanged, OrganizationChanged};
use idm_core::proto::organization::*;
use idm_core::{ApiError, IssuerId, UserId};
use idm_db::sqlx;
use idm_db::{Db, DbError, GenericClient};
use std::sync::Arc;

fn check_name(raw: &str) -> Result<String, ApiError> {
    Ok(idm_core::text::DisplayName::parse("name", raw)?
        .as_str()
        .to_owned())
}

/// Roles: 1 to 50 distinct names of 1 to 64 lowercase letters, digits,
/// `_`, `-` and `:`.
fn check_roles(roles: &[String]) -> Result<(), ApiError> {
    if roles.is_empty() || roles.len() > MAX_ROLES {
        return Err(ApiError::validation(format!(
            "roles holds 1 to {MAX_ROLES} names"
        )));
    }
    for (i, role) in roles.iter().enumerate() {
        let ok = !role.is_empty()
            && role.len() <= 64
            && role
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-:".contains(&b));
        if !ok {
            return Err(ApiError::validation(
                "a role is 1 to 64 of lowercase letters, digits and _ - :",
            ));
        }
        if roles[..i].contains(role) {
            return Err(ApiError::validation(format!("role {role} appears twice")));
        }
    }
    Ok(())
}

fn not_found() -> Error {
    ApiError::not_found("organization").into()
}

fn org_id(raw: &str) -> Result<OrganizationId, Error> {
    OrganizationId::parse(raw).map_err(|e| ApiError::internal_from(&e).into())
}

fn user_id(raw: &str) -> Result<UserId, Error> {
    UserId::parse(raw).map_err(|e| ApiError::internal_from(&e).into())
}

struct OrgRow {
    id: String,
    name: String,
    roles: Vec<String>,
    metadata: serde_json::Value,
    created_at: idm_core::Timestamp,
}

impl OrgRow {
    fn view(self) -> Result<Organization, Error> {
        Ok(Organization {
            id: org_id(&self.id)?,
            name: self.name,
            roles: self.roles,
            metadata: self.metadata,
            created_at: self.created_at,
        })
    }
}

struct MemberRow {
    organization_id: String,
    user_id: String,
    role: String,
    created_at: idm_core::Timestamp,
}

impl MemberRow {
    fn view(self) -> Result<Membership, Error> {
        Ok(Membership {
            organization_id: org_id(&self.organization_id)?,
            user_id: user_id(&self.user_id)?,
            role: self.role,
            created_at: self.created_at,
        })
    }
}

async fn load(db: &Db, issuer: &IssuerId, id: &OrganizationId) -> Result<OrgRow, Error> {
    sqlx::query_as!(
        OrgRow,
        "SELECT id, name, roles, metadata, created_at FROM directory.organizations
             WHERE id = $1 AND issuer_id = $2",
        id.as_str(),
        issuer.as_str(),
    )
    .fetch_optional(&mut *db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?
    .ok_or_else(not_found)
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id))]
pub async fn create(state: Arc<State>, req: NewOrganization) -> Result<Organization, Error> {
    let name = check_name(&req.name)?;
    let roles = req
        .roles
        .unwrap_or_else(|| DEFAULT_ROLES.iter().map(|r| (*r).to_owned()).collect());
    check_roles(&roles)?;
    let metadata =
        idm_core::text::parse_metadata(req.metadata.unwrap_or_else(|| serde_json::json!({})))?;
    let id = OrganizationId::generate();
    let row = sqlx::query_as!(
        OrgRow,
        "INSERT INTO directory.organizations (id, issuer_id, name, roles, metadata)
             VALUES ($1, $2, $3, $4, $5)
             RETURNING id, name, roles, metadata, created_at",
        id.as_str(),
        req.issuer_id.as_str(),
        name,
        &roles,
        metadata,
    )
    .fetch_one(&mut *state.db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    state
        .events
        .publish(
            &req.issuer_id,
            DomainEvent::OrganizationCreated(OrganizationChanged {
                organization_id: id,
            }),
        )
        .await?;
    row.view()
}

pub async fn get(state: Arc<State>, req: OrganizationRef) -> Result<Organization, Error> {
    load(&state.db, &req.issuer_id, &req.organization_id)
        .await?
        .view()
}

pub async fn list(state: Arc<State>, req: ListOrganizations) -> Result<OrganizationList, Error> {
    let limit = req.page.fetch();
    let rows = match &req.page.starting_after {
        None => sqlx::query_as!(
            OrgRow,
            "SELECT id, name, roles, metadata, created_at FROM directory.organizations
                 WHERE issuer_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
            req.issuer_id.as_str(),
            limit,
        )
        .fetch_all(&mut *state.db.get().await?.conn().await)
        .await
        .map_err(DbError::from)?,
        Some(after) => {
            let after =
                OrganizationId::parse(after).map_err(|_| ApiError::not_found("organization"))?;
            // Another issuer's organization is not found, like an unknown id.
            let cursor = load(&state.db, &req.issuer_id, &after).await?;
            sqlx::query_as!(
                OrgRow,
                "SELECT id, name, roles, metadata, created_at FROM directory.organizations
                     WHERE issuer_id = $1 AND (created_at, id) < ($2, $3)
                     ORDER BY created_at DESC, id DESC LIMIT $4",
                req.issuer_id.as_str(),
                cursor.created_at,
                cursor.id,
                limit,
            )
            .fetch_all(&mut *state.db.get().await?.conn().await)
            .await
            .map_err(DbError::from)?
        }
    };
    let (rows, has_more) = req.page.cut(rows);
    Ok(OrganizationList {
        data: rows
            .into_iter()
            .map(OrgRow::view)
            .collect::<Result<_, _>>()?,
        has_more,
    })
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, organization = %req.organization_id))]
pub async fn update(state: Arc<State>, req: UpdateOrganization) -> Result<Organization, Error> {
    let name = req.name.as_deref().map(check_name).transpose()?;
    if let Some(roles) = &req.roles {
        check_roles(roles)?;
    }
    let metadata = req
        .metadata
        .map(idm_core::text::parse_metadata)
        .transpose()?;
    let mut client = state.db.get().await?;
    let tx = client.transaction().await?;
    let current = sqlx::query_as!(
        OrgRow,
        "SELECT id, name, roles, metadata, created_at FROM directory.organizations
             WHERE id = $1 AND issuer_id = $2 FOR UPDATE",
        req.organization_id.as_str(),
        req.issuer_id.as_str(),
    )
    .fetch_optional(&mut *tx.conn().await)
    .await
    .map_err(DbError::from)?
    .ok_or_else(not_found)?;
    if let Some(roles) = &req.roles {
        // A role still held by a member cannot be dropped.
        let held = sqlx::query_scalar!(
            "SELECT DISTINCT role FROM directory.memberships
                 WHERE organization_id = $1 AND NOT (role = ANY($2))",
            current.id,
            roles,
        )
        .fetch_all(&mut *tx.conn().await)
        .await
        .map_err(DbError::from)?;
        if !held.is_empty() {
            return Err(ApiError::validation(format!(
                "roles still held by members cannot be removed: {}",
                held.join(", ")
            ))
            .into());
        }
    }
    let row = sqlx::query_as!(
        OrgRow,
        "UPDATE directory.organizations
             SET name = COALESCE($2, name), roles = COALESCE($3, roles),
                 metadata = COALESCE($4, metadata), updated_at = now()
             WHERE id = $1
             RETURNING id, name, roles, metadata, created_at",
        current.id,
        name,
        req.roles.as_deref(),
        metadata,
    )
    .fetch_one(&mut *tx.conn().await)
    .await
    .map_err(DbError::from)?;
    tx.commit().await?;
    state
        .events
        .publish(
            &req.issuer_id,
            DomainEvent::OrganizationUpdated(OrganizationChanged {
                organization_id: req.organization_id,
            }),
        )
        .await?;
    row.view()
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, organization = %req.organization_id))]
pub async fn delete(
    state: Arc<State>,
    DeleteOrganization(req): DeleteOrganization,
) -> Result<Organization, Error> {
    let row = sqlx::query_as!(
        OrgRow,
        "DELETE FROM directory.organizations WHERE id = $1 AND issuer_id = $2
             RETURNING id, name, roles, metadata, created_at",
        req.organization_id.as_str(),
        req.issuer_id.as_str(),
    )
    .fetch_optional(&mut *state.db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?
    .ok_or_else(not_found)?;
    state
        .events
        .publish(
            &req.issuer_id,
            DomainEvent::OrganizationDeleted(OrganizationChanged {
                organization_id: req.organization_id,
            }),
        )
        .await?;
    row.view()
}

fn check_role(org: &OrgRow, role: &str) -> Result<(), ApiError> {
    if org.roles.iter().any(|r| r == role) {
        Ok(())
    } else {
        Err(ApiError::validation(format!(
            "role must be one of the organization's roles: {}",
            org.roles.join(", ")
        )))
    }
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, organization = %req.organization_id))]
pub async fn add_member(state: Arc<State>, req: NewMembership) -> Result<Membership, Error> {
    let org = load(&state.db, &req.issuer_id, &req.organization_id).await?;
    check_role(&org, &req.role)?;
    // The user must be an active user of the same issuer (one being deleted
    // is refused with `deletion_in_progress`).
    directory::region_of_user(&state.db, &req.issuer_id, &req.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let row = sqlx::query_as!(
        MemberRow,
        "INSERT INTO directory.memberships (organization_id, user_id, role) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING
             RETURNING organization_id, user_id, role, created_at",
        org.id,
        req.user_id.as_str(),
        req.role,
    )
    .fetch_optional(&mut *state.db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?
    .ok_or_else(|| ApiError::conflict("the user is already a member of this organization"))?;
    state
        .events
        .publish(
            &req.issuer_id,
            DomainEvent::MembershipCreated(MembershipChanged {
                organization_id: req.organization_id,
                user_id: req.user_id,
                role: Some(req.role),
            }),
        )
        .await?;
    row.view()
}

pub async fn list_members(
    state: Arc<State>,
    req: ListMemberships,
) -> Result<MembershipList, Error> {
    let org = load(&state.db, &req.issuer_id, &req.organization_id).await?;
    let limit = req.page.fetch();
    let rows = match &req.page.starting_after {
        None => sqlx::query_as!(
            MemberRow,
            "SELECT organization_id, user_id, role, created_at FROM directory.memberships
                 WHERE organization_id = $1 ORDER BY created_at DESC, user_id DESC LIMIT $2",
            org.id,
            limit,
        )
        .fetch_all(&mut *state.db.get().await?.conn().await)
        .await
        .map_err(DbError::from)?,
        Some(after) => {
            let found = sqlx::query_scalar!(
                "SELECT created_at FROM directory.memberships WHERE organization_id = $1 AND user_id = $2",
                org.id,
                after,
            )
            .fetch_optional(&mut *state.db.get().await?.conn().await)
            .await
            .map_err(DbError::from)?
            .ok_or_else(|| ApiError::not_found("member"))?;
            sqlx::query_as!(
                MemberRow,
                "SELECT organization_id, user_id, role, created_at FROM directory.memberships
                     WHERE organization_id = $1 AND (created_at, user_id) < ($2, $3)
                     ORDER BY created_at DESC, user_id DESC LIMIT $4",
                org.id,
                found,
                after,
                limit,
            )
            .fetch_all(&mut *state.db.get().await?.conn().await)
            .await
            .map_err(DbError::from)?
        }
    };
    let (rows, has_more) = req.page.cut(rows);
    Ok(MembershipList {
        data: rows
            .into_iter()
            .map(MemberRow::view)
            .collect::<Result<_, _>>()?,
        has_more,
    })
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, organization = %req.organization_id))]
pub async fn update_member(
    state: Arc<State>,
    UpdateMembership(req): UpdateMembership,
) -> Result<Membership, Error> {
    let org = load(&state.db, &req.issuer_id, &req.organization_id).await?;
    check_role(&org, &req.role)?;
    let row = sqlx::query_as!(
        MemberRow,
        "UPDATE directory.memberships SET role = $3, updated_at = now()
             WHERE organization_id = $1 AND user_id = $2
             RETURNING organization_id, user_id, role, created_at",
        org.id,
        req.user_id.as_str(),
        req.role,
    )
    .fetch_optional(&mut *state.db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?
    .ok_or_else(|| ApiError::not_found("membership"))?;
    state
        .events
        .publish(
            &req.issuer_id,
            DomainEvent::MembershipUpdated(MembershipChanged {
                organization_id: req.organization_id,
                user_id: req.user_id,
                role: Some(req.role),
            }),
        )
        .await?;
    row.view()
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, organization = %req.organization_id))]
pub async fn remove_member(state: Arc<State>, req: MembershipRef) -> Result<Membership, Error> {
    let org = load(&state.db, &req.issuer_id, &req.organization_id).await?;
    let row = sqlx::query_as!(
        MemberRow,
        "DELETE FROM directory.memberships WHERE organization_id = $1 AND user_id = $2
             RETURNING organization_id, user_id, role, created_at",
        org.id,
        req.user_id.as_str(),
    )
    .fetch_optional(&mut *state.db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?
    .ok_or_else(|| ApiError::not_found("membership"))?;
    state
        .events
        .publish(
            &req.issuer_id,
            DomainEvent::MembershipDeleted(MembershipChanged {
                organization_id: req.organization_id,
                user_id: req.user_id,
                role: None,
            }),
        )
        .await?;
    row.view()
}

/// A user's memberships, newest first. The user must be one of the
/// issuer's (another issuer's user is a plain 404).
pub async fn list_for_user(
    state: Arc<State>,
    req: ListUserOrganizations,
) -> Result<MembershipList, Error> {
    directory::region_of_user(&state.db, &req.issuer_id, &req.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let limit = req.page.fetch();
    // Joined with the issuer's organizations: a membership is only ever
    // shown to the issuer that owns the organization.
    let rows = match &req.page.starting_after {
        None => sqlx::query_as!(
            MemberRow,
            "SELECT m.organization_id, m.user_id, m.role, m.created_at
                 FROM directory.memberships m JOIN directory.organizations o ON o.id = m.organization_id
                 WHERE m.user_id = $1 AND o.issuer_id = $2
                 ORDER BY m.created_at DESC, m.organization_id DESC LIMIT $3",
            req.user_id.as_str(),
            req.issuer_id.as_str(),
            limit,
        )
        .fetch_all(&mut *state.db.get().await?.conn().await)
        .await
        .map_err(DbError::from)?,
        Some(after) => {
            let found = sqlx::query_scalar!(
                "SELECT created_at FROM directory.memberships WHERE organization_id = $1 AND user_id = $2",
                after,
                req.user_id.as_str(),
            )
            .fetch_optional(&mut *state.db.get().await?.conn().await)
            .await
            .map_err(DbError::from)?
            .ok_or_else(|| ApiError::not_found("membership"))?;
            sqlx::query_as!(
                MemberRow,
                "SELECT m.organization_id, m.user_id, m.role, m.created_at
                     FROM directory.memberships m JOIN directory.organizations o ON o.id = m.organization_id
                     WHERE m.user_id = $1 AND o.issuer_id = $2
                       AND (m.created_at, m.organization_id) < ($3, $4)
                     ORDER BY m.created_at DESC, m.organization_id DESC LIMIT $5",
                req.user_id.as_str(),
                req.issuer_id.as_str(),
                found,
                after,
                limit,
            )
            .fetch_all(&mut *state.db.get().await?.conn().await)
            .await
            .map_err(DbError::from)?
        }
    };
    let (rows, has_more) = req.page.cut(rows);
    Ok(MembershipList {
        data: rows
            .into_iter()
            .map(MemberRow::view)
            .collect::<Result<_, _>>()?,
        has_more,
    })
}

/// Deletion step: every membership of the user, in the issuer's
/// organizations, removed (each one announced). Idempotent.
#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn remove_all_of_user(
    state: &State,
    req: &idm_core::proto::deletion::UserToDelete,
) -> Result<i64, Error> {
    // Announced first, removed after: a retry after a failure in between
    // announces again (at least once) rather than never.
    let held = sqlx::query_scalar!(
        "SELECT m.organization_id FROM directory.memberships m
             JOIN directory.organizations o ON o.id = m.organization_id
             WHERE m.user_id = $1 AND o.issuer_id = $2",
        req.user_id.as_str(),
        req.issuer_id.as_str(),
    )
    .fetch_all(&mut *state.db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    for organization in &held {
        state
            .events
            .publish(
                &req.issuer_id,
                DomainEvent::MembershipDeleted(MembershipChanged {
                    organization_id: org_id(organization)?,
                    user_id: req.user_id.clone(),
                    role: None,
                }),
            )
            .await?;
    }
    let removed = sqlx::query!(
        "DELETE FROM directory.memberships m USING directory.organizations o
             WHERE o.id = m.organization_id AND m.user_id = $1 AND o.issuer_id = $2",
        req.user_id.as_str(),
        req.issuer_id.as_str(),
    )
    .execute(&mut *state.db.get().await?.conn().await)
    .await
    .map_err(DbError::from)?;
    Ok(removed.rows_affected() as i64)
}
