//! Organizations and memberships (API.md; docs/LIFECYCLE.md).

use super::profiles::{page_of, ListQuery};
use super::{body, Reply};
use crate::access::Incoming;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::Json;
use idm_core::ids::OrganizationId;
use idm_core::proto::organization::{
    DeleteOrganization, ListMemberships, ListOrganizations, ListUserOrganizations, Membership,
    MembershipList, MembershipRef, NewMembership, NewOrganization, Organization, OrganizationList,
    OrganizationRef, UpdateMembership, UpdateOrganization,
};
use idm_core::UserId;
use serde::Deserialize;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrganizationBody {
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// The roles memberships may hold (default `["admin", "member"]`).
    roles: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrganizationChanges {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    /// The new role list; a role still held by a member cannot be dropped.
    roles: Option<Vec<String>>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<serde_json::Value>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMembershipBody {
    user_id: String,
    /// One of the organization's roles.
    role: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MembershipChanges {
    role: String,
}

/// Creates an organization.
#[utoipa::path(post, path = "/v1/organizations", tag = "organizations",
    request_body = NewOrganizationBody,
    responses((status = 201, description = "The organization", body = Organization)))]
pub async fn create(
    incoming: Incoming,
    new: Result<Json<NewOrganizationBody>, JsonRejection>,
) -> Reply<(StatusCode, Json<Organization>)> {
    let caller = incoming.authorize().await?;
    let new = body(new)?;
    let request = NewOrganization {
        issuer_id: caller.key.issuer_id.clone(),
        name: new.name,
        roles: new.roles,
        metadata: new.metadata,
    };
    let created = incoming.app.bus.send(&request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// The issuer's organizations, newest first.
#[utoipa::path(get, path = "/v1/organizations", tag = "organizations", params(ListQuery),
    responses((status = 200, description = "One page", body = OrganizationList)))]
pub async fn list(
    incoming: Incoming,
    page: Result<Query<ListQuery>, QueryRejection>,
) -> Reply<Json<OrganizationList>> {
    let caller = incoming.authorize().await?;
    let request = ListOrganizations {
        issuer_id: caller.key.issuer_id.clone(),
        page: page_of(page)?,
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}

/// One organization.
#[utoipa::path(get, path = "/v1/organizations/{id}", tag = "organizations",
    params(("id" = String, Path, description = "The organization's id")),
    responses((status = 200, description = "The organization", body = Organization)))]
pub async fn get(incoming: Incoming, Path(id): Path<String>) -> Reply<Json<Organization>> {
    let caller = incoming.authorize().await?;
    let request = OrganizationRef {
        issuer_id: caller.key.issuer_id.clone(),
        organization_id: OrganizationId::parse(&id)?,
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}

/// Changes an organization's name, roles or metadata.
#[utoipa::path(patch, path = "/v1/organizations/{id}", tag = "organizations",
    params(("id" = String, Path, description = "The organization's id")),
    request_body = OrganizationChanges,
    responses((status = 200, description = "The organization", body = Organization)))]
pub async fn update(
    incoming: Incoming,
    Path(id): Path<String>,
    changes: Result<Json<OrganizationChanges>, JsonRejection>,
) -> Reply<Json<Organization>> {
    let caller = incoming.authorize().await?;
    let organization_id = OrganizationId::parse(&id)?;
    let changes = body(changes)?;
    let request = UpdateOrganization {
        issuer_id: caller.key.issuer_id.clone(),
        organization_id,
        name: changes.name,
        roles: changes.roles,
        metadata: changes.metadata,
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}

/// Deletes an organization and its memberships.
#[utoipa::path(delete, path = "/v1/organizations/{id}", tag = "organizations",
    params(("id" = String, Path, description = "The organization's id")),
    responses((status = 200, description = "The deleted organization", body = Organization)))]
pub async fn delete(incoming: Incoming, Path(id): Path<String>) -> Reply<Json<Organization>> {
    let caller = incoming.authorize().await?;
    let request = DeleteOrganization(OrganizationRef {
        issuer_id: caller.key.issuer_id.clone(),
        organization_id: OrganizationId::parse(&id)?,
    });
    Ok(Json(incoming.app.bus.send(&request).await?))
}

/// Adds a user of the issuer to an organization with one of its roles.
#[utoipa::path(post, path = "/v1/organizations/{id}/memberships", tag = "organizations",
    params(("id" = String, Path, description = "The organization's id")),
    request_body = NewMembershipBody,
    responses((status = 201, description = "The membership", body = Membership)))]
pub async fn add_member(
    incoming: Incoming,
    Path(id): Path<String>,
    new: Result<Json<NewMembershipBody>, JsonRejection>,
) -> Reply<(StatusCode, Json<Membership>)> {
    let caller = incoming.authorize().await?;
    let organization_id = OrganizationId::parse(&id)?;
    let new = body(new)?;
    let request = NewMembership {
        issuer_id: caller.key.issuer_id.clone(),
        organization_id,
        user_id: UserId::parse(&new.user_id)?,
        role: new.role,
    };
    let created = incoming.app.bus.send(&request).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// An organization's memberships, newest first (`starting_after` is a user id).
#[utoipa::path(get, path = "/v1/organizations/{id}/memberships", tag = "organizations",
    params(("id" = String, Path, description = "The organization's id"), ListQuery),
    responses((status = 200, description = "One page", body = MembershipList)))]
pub async fn list_members(
    incoming: Incoming,
    Path(id): Path<String>,
    page: Result<Query<ListQuery>, QueryRejection>,
) -> Reply<Json<MembershipList>> {
    let caller = incoming.authorize().await?;
    let request = ListMemberships {
        issuer_id: caller.key.issuer_id.clone(),
        organization_id: OrganizationId::parse(&id)?,
        page: page_of(page)?,
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}

/// Changes a member's role.
#[utoipa::path(patch, path = "/v1/organizations/{id}/memberships/{user_id}", tag = "organizations",
    params(("id" = String, Path, description = "The organization's id"),
        ("user_id" = UserId, Path, description = "The member's user id")),
    request_body = MembershipChanges,
    responses((status = 200, description = "The membership", body = Membership)))]
pub async fn update_member(
    incoming: Incoming,
    Path((id, user)): Path<(String, String)>,
    changes: Result<Json<MembershipChanges>, JsonRejection>,
) -> Reply<Json<Membership>> {
    let caller = incoming.authorize().await?;
    let organization_id = OrganizationId::parse(&id)?;
    let user_id = UserId::parse(&user)?;
    let changes = body(changes)?;
    let request = UpdateMembership(NewMembership {
        issuer_id: caller.key.issuer_id.clone(),
        organization_id,
        user_id,
        role: changes.role,
    });
    Ok(Json(incoming.app.bus.send(&request).await?))
}

/// Removes a member.
#[utoipa::path(delete, path = "/v1/organizations/{id}/memberships/{user_id}", tag = "organizations",
    params(("id" = String, Path, description = "The organization's id"),
        ("user_id" = UserId, Path, description = "The member's user id")),
    responses((status = 200, description = "The removed membership", body = Membership)))]
pub async fn remove_member(
    incoming: Incoming,
    Path((id, user)): Path<(String, String)>,
) -> Reply<Json<Membership>> {
    let caller = incoming.authorize().await?;
    let request = MembershipRef {
        issuer_id: caller.key.issuer_id.clone(),
        organization_id: OrganizationId::parse(&id)?,
        user_id: UserId::parse(&user)?,
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}

/// A user's memberships, newest first (`starting_after` is an organization id).
#[utoipa::path(get, path = "/v1/users/{id}/organizations", tag = "organizations",
    params(("id" = UserId, Path, description = "The user's id"), ListQuery),
    responses((status = 200, description = "One page", body = MembershipList)))]
pub async fn list_for_user(
    incoming: Incoming,
    Path(id): Path<String>,
    page: Result<Query<ListQuery>, QueryRejection>,
) -> Reply<Json<MembershipList>> {
    let caller = incoming.authorize().await?;
    let request = ListUserOrganizations {
        issuer_id: caller.key.issuer_id.clone(),
        user_id: UserId::parse(&id)?,
        page: page_of(page)?,
    };
    Ok(Json(incoming.app.bus.send(&request).await?))
}
