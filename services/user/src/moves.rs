//! The directory's part of moving a user to another region (called by the
//! deletion-worker, which runs the move as a durable job): the rules are
//! checked and the user marked `moving` ([`begin`]), and once the copy is
//! verified the directory points at the new region ([`switch`]). See
//! docs/REGIONS.md "Moving a user".

use crate::{directory, handlers, Error, State};
use idm_core::ids::MoveId;
use idm_core::proto::deletion::Removed;
use idm_core::proto::moves::directory::{BeginMove, MoveTarget, SwitchRegion};
use idm_core::{ApiError, ErrorCode, IssuerPolicy, Jurisdiction, Region};
use std::sync::Arc;

/// Whether the issuer's users may move from `from` to `to`: within the
/// issuer's permitted regions, never to the region they are in, and within
/// one jurisdiction (API.md: "within the EU or among best-effort regions
/// only"): never out of the EU, and not into it from a best-effort region
/// either (such a user would change placement from best-effort to hard;
/// the issuer re-creates the user there if that is wanted).
pub fn check(policy: &IssuerPolicy, from: Region, to: Region) -> Result<(), ApiError> {
    if from == to {
        return Err(ApiError::validation(format!(
            "the user is already in region {to}"
        )));
    }
    if from.jurisdiction() == Jurisdiction::Eu && to.jurisdiction() != Jurisdiction::Eu {
        return Err(ApiError::new(
            ErrorCode::ResidencyViolation,
            format!("the user's data is in {from} and may not leave the EU"),
        ));
    }
    if from.jurisdiction() != to.jurisdiction() {
        return Err(ApiError::new(
            ErrorCode::ResidencyViolation,
            format!(
                "a move stays within the EU or among best-effort regions: {from} to {to} crosses"
            ),
        ));
    }
    if !policy.permitted_regions().contains(&to) {
        return Err(ApiError::new(
            ErrorCode::ResidencyViolation,
            format!("the issuer's policy does not allow region {to}"),
        ));
    }
    Ok(())
}

#[tracing::instrument(skip_all, fields(issuer = %req.ctx.issuer_id, user = %req.user_id, to = %req.to))]
pub async fn begin(state: Arc<State>, req: BeginMove) -> Result<MoveTarget, Error> {
    let issuer = &req.ctx.issuer_id;
    // The rules first (nothing written when they refuse), then the target
    // store must answer as its region: a move is refused upfront rather
    // than left waiting on a region that is down or misconfigured.
    let from = directory::region_of_user(&state.db, issuer, &req.user_id).await;
    match from {
        Ok(Some(from)) => {
            check(&req.ctx.policy, from, req.to)?;
            let info = state
                .stores
                .announced(&state.bus, req.to)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, region = %req.to, "move target store did not answer");
                    ApiError::new(
                        ErrorCode::RegionUnavailable,
                        format!("region {} is unavailable; retry later", req.to),
                    )
                    .with_details(serde_json::json!({ "region": req.to, "retry_after": 30 }))
                })?;
            handlers::check_store(&state, req.to, &info)?;
        }
        Ok(None) => return Err(ApiError::not_found("user").into()),
        // Already moving (or being deleted): the directory answers below.
        Err(_) => {}
    }
    let policy = req.ctx.policy.clone();
    let to = req.to;
    let recorded = directory::begin_move(
        &state.db,
        issuer,
        &req.user_id,
        req.move_id.as_str(),
        req.to,
        |from| check(&policy, from, to),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("user"))?;
    let move_id = MoveId::parse(&recorded.move_id).map_err(|e| ApiError::internal_from(&e))?;
    tracing::info!(%move_id, from = %recorded.from, to = %recorded.to, "user marked moving");
    Ok(MoveTarget {
        move_id,
        from: recorded.from,
        to: recorded.to,
    })
}

#[tracing::instrument(skip_all, fields(issuer = %req.issuer_id, user = %req.user_id))]
pub async fn switch(state: Arc<State>, req: SwitchRegion) -> Result<Removed, Error> {
    let switched = directory::switch_region(
        &state.db,
        &req.issuer_id,
        &req.user_id,
        req.move_id.as_str(),
        req.from,
        req.to,
    )
    .await?;
    tracing::info!(from = %req.from, to = %req.to, switched, "directory points at the new region");
    Ok(Removed {
        removed: [("directory_entries_switched".to_owned(), i64::from(switched))].into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use idm_core::policy::Residency;

    #[test]
    fn never_out_of_the_eu_never_in_place_and_only_where_the_policy_allows() {
        let open = IssuerPolicy::default();
        assert!(check(&open, Region::Weur, Region::Eeur).is_ok());
        assert!(check(&open, Region::Wnam, Region::Enam).is_ok());
        let code = |r: Result<(), ApiError>| r.err().map(|e| e.code);
        assert_eq!(
            code(check(&open, Region::Weur, Region::Wnam)),
            Some(ErrorCode::ResidencyViolation)
        );
        assert_eq!(
            code(check(&open, Region::Wnam, Region::Weur)),
            Some(ErrorCode::ResidencyViolation)
        );
        assert_eq!(
            code(check(&open, Region::Eeur, Region::Eeur)),
            Some(ErrorCode::ValidationFailed)
        );
        let eu = IssuerPolicy {
            residency: Some(Residency::Eu),
            ..IssuerPolicy::default()
        };
        assert_eq!(
            code(check(&eu, Region::Wnam, Region::Enam)),
            Some(ErrorCode::ResidencyViolation)
        );
    }
}
