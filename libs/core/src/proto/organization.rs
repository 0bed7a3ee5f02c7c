//! Organizations and memberships, served by the user service (the global
//! `directory` schema): `<prefix>.user.v1.<op>`. Memberships hold ids only.

use crate::ids::OrganizationId;
use crate::{IssuerId, Timestamp, UserId};
use serde::{Deserialize, Serialize};

pub const CREATE_ORGANIZATION: &str = "create_organization";
pub const GET_ORGANIZATION: &str = "get_organization";
pub const LIST_ORGANIZATIONS: &str = "list_organizations";
pub const UPDATE_ORGANIZATION: &str = "update_organization";
pub const DELETE_ORGANIZATION: &str = "delete_organization";
pub const ADD_MEMBERSHIP: &str = "add_membership";
pub const LIST_MEMBERSHIPS: &str = "list_memberships";
pub const UPDATE_MEMBERSHIP: &str = "update_membership";
pub const REMOVE_MEMBERSHIP: &str = "remove_membership";
pub const LIST_USER_ORGANIZATIONS: &str = "list_user_organizations";

super::operation::operations!(service "user" {
    NewOrganization => Organization = CREATE_ORGANIZATION,
    OrganizationRef => Organization = GET_ORGANIZATION,
    ListOrganizations => OrganizationList = LIST_ORGANIZATIONS,
    UpdateOrganization => Organization = UPDATE_ORGANIZATION,
    DeleteOrganization => Organization = DELETE_ORGANIZATION,
    NewMembership => Membership = ADD_MEMBERSHIP,
    ListMemberships => MembershipList = LIST_MEMBERSHIPS,
    UpdateMembership => Membership = UPDATE_MEMBERSHIP,
    MembershipRef => Membership = REMOVE_MEMBERSHIP,
    ListUserOrganizations => MembershipList = LIST_USER_ORGANIZATIONS,
});

/// The roles an organization gets when it is created without a list.
pub const DEFAULT_ROLES: [&str; 2] = ["admin", "member"];
/// At most this many roles per organization.
pub const MAX_ROLES: usize = 50;

pub use crate::page::Page;

/// `{id, name, roles, metadata, created_at}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Organization {
    #[schema(value_type = String)]
    pub id: OrganizationId,
    pub name: String,
    /// The roles a membership may hold, issuer-defined.
    pub roles: Vec<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrganizationList {
    pub data: Vec<Organization>,
    pub has_more: bool,
}

/// `{organization_id, user_id, role, created_at}`: ids only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Membership {
    #[schema(value_type = String)]
    pub organization_id: OrganizationId,
    pub user_id: UserId,
    pub role: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MembershipList {
    pub data: Vec<Membership>,
    pub has_more: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewOrganization {
    pub issuer_id: IssuerId,
    pub name: String,
    pub roles: Option<Vec<String>>,
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrganizationRef {
    pub issuer_id: IssuerId,
    pub organization_id: OrganizationId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeleteOrganization(pub OrganizationRef);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListOrganizations {
    pub issuer_id: IssuerId,
    pub page: Page,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateOrganization {
    pub issuer_id: IssuerId,
    pub organization_id: OrganizationId,
    pub name: Option<String>,
    pub roles: Option<Vec<String>>,
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewMembership {
    pub issuer_id: IssuerId,
    pub organization_id: OrganizationId,
    pub user_id: UserId,
    pub role: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UpdateMembership(pub NewMembership);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipRef {
    pub issuer_id: IssuerId,
    pub organization_id: OrganizationId,
    pub user_id: UserId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListMemberships {
    pub issuer_id: IssuerId,
    pub organization_id: OrganizationId,
    pub page: Page,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListUserOrganizations {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
    pub page: Page,
}
