//! User deletion as a durable workflow: the deletion-worker's own operations
//! (`<prefix>.deletion.v1.<op>`), and the steps it calls on the directory
//! ([`directory`]) and on the regional stores ([`store`]).

use crate::ids::DeletionId;
use crate::{IssuerId, Region, Timestamp, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const START_DELETION: &str = "start_deletion";
pub const GET_DELETION: &str = "get_deletion";

super::operation::operations!(service "deletion" {
    StartDeletion => Deletion = START_DELETION,
    GetDeletion => Deletion = GET_DELETION,
});

/// The steps of a deletion, in the order they run.
pub const STEPS: [&str; 6] = [
    "revoke_sessions",
    "revoke_personal_tokens",
    "remove_memberships",
    "delete_regional_data",
    "delete_directory_entries",
    "emit_user_deleted",
];

/// Starts (or finds) the deletion of a user: one job per user, ever.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartDeletion {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetDeletion {
    pub issuer_id: IssuerId,
    pub deletion_id: DeletionId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeletionStatus {
    /// Steps remain; each is retried until it succeeds.
    Running,
    /// Every step succeeded; `receipt` says what was removed.
    Completed,
    /// A step has kept failing for longer than the stall threshold; it is
    /// still retried, and the job completes once it succeeds.
    Stalled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    /// Tried and failed at least once; retried with back-off.
    Failing,
    Completed,
}

/// `GET /v1/deletions/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Deletion {
    #[schema(value_type = String)]
    pub id: DeletionId,
    pub user_id: UserId,
    pub status: DeletionStatus,
    /// The region whose store held the user's data.
    pub region: Region,
    pub steps: Vec<DeletionStep>,
    /// Once completed: what was removed where, and when.
    pub receipt: Option<Receipt>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeletionStep {
    pub name: String,
    pub status: StepStatus,
    pub attempts: i32,
    /// The latest failure (an error code and message; never personal data).
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<Timestamp>,
}

/// The deletion receipt: what each step removed, where and when. It holds
/// ids and counts, no personal data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Receipt {
    #[schema(value_type = String)]
    pub deletion_id: DeletionId,
    pub user_id: UserId,
    #[schema(value_type = String)]
    pub issuer_id: IssuerId,
    pub region: Region,
    pub steps: Vec<ReceiptStep>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub completed_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReceiptStep {
    pub step: String,
    /// Where it acted (`session service`, `store weur, schema iss_…`,
    /// `directory`, `EVENTS`).
    pub location: String,
    /// What it removed: a count per kind (table, key family, ...).
    pub removed: BTreeMap<String, i64>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
}

/// What one step removed: a count per kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Removed {
    pub removed: BTreeMap<String, i64>,
}

/// One user of one issuer, as the steps name it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserToDelete {
    pub issuer_id: IssuerId,
    pub user_id: UserId,
}

/// The user service's part of a deletion: `<prefix>.user.v1.<op>`.
pub mod directory {
    use super::*;

    pub const BEGIN_DELETION: &str = "begin_deletion";
    pub const REMOVE_USER_MEMBERSHIPS: &str = "remove_user_memberships";
    pub const PURGE_DIRECTORY_ENTRY: &str = "purge_directory_entry";

    crate::proto::operation::operations!(service "user" {
        BeginDeletion => DeletionTarget = BEGIN_DELETION,
        RemoveUserMemberships => Removed = REMOVE_USER_MEMBERSHIPS,
        PurgeDirectoryEntry => Removed = PURGE_DIRECTORY_ENTRY,
    });

    /// Marks the user `deleting` in the directory (sign-in, reads and
    /// changes refuse it from now on) under `deletion_id`, unless it already
    /// is: the id first recorded is the one answered.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct BeginDeletion {
        pub issuer_id: IssuerId,
        pub user_id: UserId,
        pub deletion_id: DeletionId,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct DeletionTarget {
        pub deletion_id: DeletionId,
        pub region: Region,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(transparent)]
    pub struct RemoveUserMemberships(pub UserToDelete);

    /// Removes the directory row (and with it the blind email index entry).
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(transparent)]
    pub struct PurgeDirectoryEntry(pub UserToDelete);
}

/// The regional store's part of a deletion: `<prefix>.store.<region>.v1.<op>`.
pub mod store {
    use super::*;

    pub const REVOKE_USER_PERSONAL_TOKENS: &str = "revoke_user_personal_tokens";
    pub const PURGE_USER: &str = "purge_user";

    crate::proto::operation::operations!(store {
        RevokeUserPersonalTokens => Removed = REVOKE_USER_PERSONAL_TOKENS,
        PurgeUser => Removed = PURGE_USER,
    });

    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(transparent)]
    pub struct RevokeUserPersonalTokens(pub UserToDelete);

    /// Deletes every row that refers to the user from every table of the
    /// issuer's schema (any table with a `user_id` column), then the user.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(transparent)]
    pub struct PurgeUser(pub UserToDelete);
}

/// auth's part of a deletion (its Redis keys and failure budgets):
/// `<prefix>.auth.v1.<op>`.
pub mod auth {
    use super::*;

    pub const FORGET_USER: &str = "forget_user";

    crate::proto::operation::operations!(service "auth" {
        ForgetUser => Removed = FORGET_USER,
    });

    /// Erases what auth keeps about the user outside the region: pending
    /// second-factor sign-ins in Redis and the user's TOTP failure budget.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(transparent)]
    pub struct ForgetUser(pub UserToDelete);
}

pub mod account {
    use super::*;

    pub const FORGET_AUDIT_NETWORKS: &str = "forget_audit_networks";

    crate::proto::operation::operations!(service "account" {
        ForgetAuditNetworks => Removed = FORGET_AUDIT_NETWORKS,
    });

    /// Clears the IP network (personal data kept outside the region) from
    /// the audit rows the user acted in or that are about the user; the
    /// rows themselves stay (ids only), as the audit log is append-only.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(transparent)]
    pub struct ForgetAuditNetworks(pub UserToDelete);
}
