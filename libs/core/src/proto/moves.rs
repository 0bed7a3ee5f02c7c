//! Moving a user to another region (issue 13, docs/REGIONS.md "Moving a
//! user"): a durable job of the deletion-worker (`<prefix>.deletion.v1.<op>`)
//! whose steps call the directory ([`directory`]) and the regional stores
//! ([`store`]).

use super::deletion::{DeletionStatus, StepStatus};
use super::IssuerContext;
use crate::ids::MoveId;
use crate::{IssuerId, Region, Timestamp, UserId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const START_MOVE: &str = "start_move";
pub const GET_MOVE: &str = "get_move";

super::operation::operations!(service "deletion" {
    StartMove => UserMove = START_MOVE,
    GetMove => UserMove = GET_MOVE,
});

/// The steps of a move, in the order they run. Sessions and personal
/// tokens end first (in the source, so the copy carries them revoked); the
/// copy is verified before the directory points at the target; the source
/// is deleted last.
pub const STEPS: [&str; 7] = [
    "revoke_sessions",
    "revoke_personal_tokens",
    "copy",
    "verify",
    "switch_directory",
    "delete_source",
    "emit_user_moved",
];

/// Starts (or finds) the move of a user to `to`: one unfinished move per
/// user; a second request answers the running job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartMove {
    /// The issuer's policy decides which regions are allowed.
    pub ctx: IssuerContext,
    pub user_id: UserId,
    pub to: Region,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetMove {
    pub issuer_id: IssuerId,
    pub move_id: MoveId,
}

/// `GET /v1/user_moves/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserMove {
    #[schema(value_type = String)]
    pub id: MoveId,
    pub user_id: UserId,
    /// `running`, `stalled` (a step keeps failing; still retried) or
    /// `completed`.
    pub status: DeletionStatus,
    pub from_region: Region,
    pub to_region: Region,
    pub steps: Vec<MoveStep>,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MoveStep {
    pub name: String,
    pub status: StepStatus,
    pub attempts: i32,
    /// The latest failure (an error code and message; never personal data).
    pub last_error: Option<String>,
    /// Where it acted (`store wnam, schema iss_…`, `directory`, ...).
    pub location: Option<String>,
    /// What it did: a count per kind (rows copied per table, ...).
    pub counts: BTreeMap<String, i64>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<Timestamp>,
}

/// The user service's part of a move: `<prefix>.user.v1.<op>`.
pub mod directory {
    use super::*;
    use crate::proto::deletion::Removed;

    pub const BEGIN_MOVE: &str = "begin_move";
    pub const SWITCH_REGION: &str = "switch_region";

    crate::proto::operation::operations!(service "user" {
        BeginMove => MoveTarget = BEGIN_MOVE,
        SwitchRegion => Removed = SWITCH_REGION,
    });

    /// Checks the move against the issuer's policy and the residency rules
    /// and marks the user `moving` under `move_id`, unless it already is
    /// (then the id first recorded is answered, with its target).
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct BeginMove {
        pub ctx: IssuerContext,
        pub user_id: UserId,
        pub move_id: MoveId,
        pub to: Region,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct MoveTarget {
        pub move_id: MoveId,
        pub from: Region,
        pub to: Region,
    }

    /// Points the directory at `to` and makes the user active again, with
    /// the evidence (`moved`, `moved_from`, `moved_at`). Idempotent.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct SwitchRegion {
        pub issuer_id: IssuerId,
        pub user_id: UserId,
        pub move_id: MoveId,
        pub from: Region,
        pub to: Region,
    }
}

/// The regional stores' part of a move: `<prefix>.store.<region>.v1.<op>`.
pub mod store {
    use super::*;
    use crate::proto::deletion::Removed;

    pub const EXPORT_USER: &str = "export_user";
    pub const COPY_USER_FROM: &str = "copy_user_from";
    pub const DIGEST_USER: &str = "digest_user";

    crate::proto::operation::operations!(store {
        ExportUser => UserRows = EXPORT_USER,
        CopyUserFrom => Removed = COPY_USER_FROM,
        DigestUser => UserDigest = DIGEST_USER,
    });

    /// Asked of the source store by the target store: every row of the
    /// issuer's schema that belongs to the user. `to` is the region the
    /// rows go to; an EU store refuses to export to a non-EU region.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct ExportUser {
        pub issuer_id: IssuerId,
        pub user_id: UserId,
        pub to: Region,
    }

    /// The user's rows, per table (each row as JSON, as PostgreSQL's
    /// `to_jsonb` writes it), tables in the order they must be inserted.
    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct UserRows {
        pub tables: Vec<(String, Vec<serde_json::Value>)>,
    }

    /// Asked of the target store: fetch the user's rows from `from`'s store
    /// and replace the user's rows here with them (one transaction,
    /// creating the issuer's schema here first if needed). Idempotent.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct CopyUserFrom {
        pub issuer_id: IssuerId,
        pub user_id: UserId,
        pub from: Region,
    }

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct DigestUser {
        pub issuer_id: IssuerId,
        pub user_id: UserId,
    }

    /// Per table: how many of the user's rows, and an MD5 over them (each
    /// row's JSON text, sorted). Equal digests in two regions mean equal
    /// copies.
    #[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
    pub struct UserDigest {
        pub tables: BTreeMap<String, TableDigest>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct TableDigest {
        pub rows: i64,
        pub checksum: String,
    }
}
