//! Where a new user lives: an explicit region if the policy permits it, else
//! the region nearest their country, else the issuer's (or the deployment's)
//! default; then, only for best-effort regions, the nearest fallback that is up.

use idm_core::proto::user::PlacementReason;
use idm_core::{ApiError, Country, ErrorCode, IssuerPolicy, Region};

/// The region, and why: `hint` (explicit), `country`, or `default`.
pub fn choose(
    policy: &IssuerPolicy,
    explicit: Option<Region>,
    country: Option<&str>,
    deployment_default: Region,
) -> Result<(Region, PlacementReason), ApiError> {
    let permitted = policy.permitted_regions();
    if let Some(region) = explicit {
        return if permitted.contains(&region) {
            Ok((region, PlacementReason::Hint))
        } else {
            Err(ApiError::new(
                ErrorCode::ResidencyViolation,
                format!("the issuer's policy does not allow region {region}"),
            ))
        };
    }
    if let Some(region) = country
        .and_then(Country::parse)
        .and_then(Region::nearest_to)
    {
        if permitted.contains(&region) {
            return Ok((region, PlacementReason::Country));
        }
    }
    let fallback = policy
        .default_region
        .or(Some(deployment_default))
        .filter(|r| permitted.contains(r));
    fallback
        .or_else(|| permitted.first().copied())
        .map(|region| (region, PlacementReason::Default))
        .ok_or_else(|| ApiError::validation("the issuer's policy permits no region"))
}

/// Regions to try in order: the chosen one, then (best-effort only) its
/// permitted fallbacks. EU regions never fall back.
pub fn candidates(policy: &IssuerPolicy, chosen: Region) -> Vec<Region> {
    let permitted = policy.permitted_regions();
    std::iter::once(chosen)
        .chain(
            chosen
                .fallbacks()
                .iter()
                .copied()
                .filter(|r| permitted.contains(r)),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use idm_core::policy::Residency;

    #[test]
    fn explicit_then_country_then_default() {
        let open = IssuerPolicy::default();
        assert_eq!(
            choose(&open, Some(Region::Oc), Some("DE"), Region::Weur).ok(),
            Some((Region::Oc, PlacementReason::Hint))
        );
        assert_eq!(
            choose(&open, None, Some("BR"), Region::Weur).ok(),
            Some((Region::Sam, PlacementReason::Country))
        );
        assert_eq!(
            choose(&open, None, Some("??"), Region::Apac).ok(),
            Some((Region::Apac, PlacementReason::Default))
        );
    }

    #[test]
    fn eu_residency_is_never_left() {
        let eu = IssuerPolicy {
            residency: Some(Residency::Eu),
            ..IssuerPolicy::default()
        };
        let refused = choose(&eu, Some(Region::Wnam), None, Region::Weur).map_err(|e| e.code);
        assert_eq!(refused, Err(ErrorCode::ResidencyViolation));
        assert_eq!(
            choose(&eu, None, Some("US"), Region::Enam).ok(),
            Some((Region::Weur, PlacementReason::Default))
        );
        assert_eq!(candidates(&eu, Region::Eeur), vec![Region::Eeur]);
        assert_eq!(
            candidates(&IssuerPolicy::default(), Region::Oc),
            vec![Region::Oc, Region::Apac, Region::Wnam]
        );
    }
}
