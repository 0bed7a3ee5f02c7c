//! An account's plan: the ceilings the platform operator sets on what the
//! account's issuers may configure and consume. Tenants choose their own
//! limits (`policy.waf`) at or below these; the quotas belong to the
//! account, counted per mode (test sends never consume live quota).
//!
//! The operator sets a plan per account (`PUT /admin/v1/accounts/{id}/plan`
//! on the account service); accounts without one get the deployment's
//! default (`ACCOUNT_DEFAULT_PLAN`, fields not given take the defaults
//! below). Every field has a default, so `{}` is a plan; unknown fields are
//! refused so a typo cannot leave a ceiling at its default.

use crate::waf_policy::VelocityLimit;
use crate::{ApiError, ErrorCode, KeyMode, WafPolicy};
use serde::{Deserialize, Serialize};

const DAY: u32 = 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountPlan {
    /// Ceilings on each issuer's own velocity limits (`waf.backend`,
    /// `waf.client`, `waf.verification`: requests per client network and
    /// route class).
    pub max_backend: VelocityLimit,
    pub max_client: VelocityLimit,
    pub max_verification: VelocityLimit,
    /// Ceiling on `waf.recipient_limit` per `waf.recipient_window_seconds`:
    /// emails to one recipient.
    pub max_recipient: VelocityLimit,
    /// Emails all live issuers of the account may send per calendar month
    /// (UTC), together.
    pub monthly_email_quota: u32,
    /// The same for the account's test issuers, counted apart.
    pub test_monthly_email_quota: u32,
    /// Issuers the account may have, live and test together.
    pub max_issuers: u32,
}

impl Default for AccountPlan {
    fn default() -> Self {
        Self {
            max_backend: VelocityLimit::new(60_000, 60),
            max_client: VelocityLimit::new(6_000, 60),
            max_verification: VelocityLimit::new(600, 60),
            max_recipient: VelocityLimit::new(50, 3600),
            monthly_email_quota: 10_000,
            test_monthly_email_quota: 1_000,
            max_issuers: 25,
        }
    }
}

/// Whether `wanted` asks for no more than `ceiling`: no larger burst and no
/// higher rate (a longer window at the same count is a lower rate).
pub fn velocity_within(wanted: VelocityLimit, ceiling: VelocityLimit) -> bool {
    wanted.limit <= ceiling.limit
        && u64::from(wanted.limit) * u64::from(ceiling.window_seconds)
            <= u64::from(ceiling.limit) * u64::from(wanted.window_seconds)
}

fn above(field: &str, ceiling: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::LimitAbovePlan,
        format!("waf.{field} is above the account's plan (at most {ceiling})"),
    )
    .with_details(serde_json::json!({ "field": format!("waf.{field}") }))
}

fn per(limit: VelocityLimit) -> String {
    format!("{} per {} s", limit.limit, limit.window_seconds)
}

impl AccountPlan {
    /// Sane ranges, so an operator typo cannot make a plan meaningless.
    pub fn validate(&self) -> Result<(), ApiError> {
        for (name, v, max_window) in [
            ("max_backend", self.max_backend, DAY),
            ("max_client", self.max_client, DAY),
            ("max_verification", self.max_verification, DAY),
            ("max_recipient", self.max_recipient, 30 * DAY),
        ] {
            if !(1..=10_000_000).contains(&v.limit) || !(1..=max_window).contains(&v.window_seconds)
            {
                return Err(ApiError::validation(format!(
                    "{name} needs a limit between 1 and 10000000 and a window between 1 and {max_window} seconds"
                )));
            }
        }
        if !(1..=10_000).contains(&self.max_issuers) {
            return Err(ApiError::validation(
                "max_issuers must be between 1 and 10000",
            ));
        }
        Ok(())
    }

    /// The monthly email quota of the account's `mode` issuers.
    pub fn quota_for(&self, mode: KeyMode) -> u32 {
        match mode {
            KeyMode::Live => self.monthly_email_quota,
            KeyMode::Test => self.test_monthly_email_quota,
        }
    }

    /// Refuses (`limit_above_plan`) a change of an issuer's WAF policy from
    /// `current` to `wanted` that sets a limit above this plan. Only the
    /// limits the change touches are checked: one left as it was (set
    /// before the operator lowered the plan, or a default above a small
    /// plan) is capped where it is enforced instead (see the `effective_*`
    /// methods), so lowering a plan never locks a tenant out of editing the
    /// rest of its policy.
    pub fn admits(
        &self,
        mode: KeyMode,
        current: &WafPolicy,
        wanted: &WafPolicy,
    ) -> Result<(), ApiError> {
        for (name, now, want, ceiling) in [
            ("backend", current.backend, wanted.backend, self.max_backend),
            ("client", current.client, wanted.client, self.max_client),
            (
                "verification",
                current.verification,
                wanted.verification,
                self.max_verification,
            ),
        ] {
            if want != now && !velocity_within(want, ceiling) {
                return Err(above(name, per(ceiling)));
            }
        }
        let recipient =
            |w: &WafPolicy| VelocityLimit::new(w.recipient_limit, w.recipient_window_seconds);
        if recipient(wanted) != recipient(current)
            && !velocity_within(recipient(wanted), self.max_recipient)
        {
            return Err(above("recipient_limit", per(self.max_recipient)));
        }
        let quota = self.quota_for(mode);
        if wanted.monthly_email_quota != current.monthly_email_quota
            && wanted.monthly_email_quota > quota
        {
            return Err(above("monthly_email_quota", quota));
        }
        Ok(())
    }

    /// The velocity limit the edge applies: the issuer's own, unless the
    /// plan has since been lowered below it.
    pub fn effective(wanted: VelocityLimit, ceiling: VelocityLimit) -> VelocityLimit {
        if velocity_within(wanted, ceiling) {
            wanted
        } else {
            ceiling
        }
    }

    pub fn effective_velocity(&self, waf: &WafPolicy, class: RouteLimit) -> VelocityLimit {
        match class {
            RouteLimit::Backend => Self::effective(waf.backend, self.max_backend),
            RouteLimit::Client => Self::effective(waf.client, self.max_client),
            RouteLimit::Verification => Self::effective(waf.verification, self.max_verification),
        }
    }

    pub fn effective_recipient(&self, waf: &WafPolicy) -> VelocityLimit {
        Self::effective(
            VelocityLimit::new(waf.recipient_limit, waf.recipient_window_seconds),
            self.max_recipient,
        )
    }

    /// The issuer's own quota, capped by the plan's for its mode.
    pub fn effective_quota(&self, mode: KeyMode, waf: &WafPolicy) -> u32 {
        waf.monthly_email_quota.min(self.quota_for(mode))
    }
}

/// The route classes a plan caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLimit {
    Backend,
    Client,
    Verification,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_plan_admits_the_default_policy_and_validates() {
        let plan = AccountPlan::default();
        assert!(plan.validate().is_ok());
        let policy = WafPolicy::default();
        for mode in [KeyMode::Live, KeyMode::Test] {
            assert!(plan.admits(mode, &policy, &policy).is_ok());
        }
        assert_eq!(serde_json::from_str::<AccountPlan>("{}").ok(), Some(plan));
        assert!(serde_json::from_str::<AccountPlan>(r#"{"max_issuer":3}"#).is_err());
    }

    #[test]
    fn a_raised_limit_above_the_plan_is_refused_with_its_code() {
        let plan = AccountPlan::default();
        let current = WafPolicy::default();
        let refused =
            |wanted: WafPolicy, mode| plan.admits(mode, &current, &wanted).err().map(|e| e.code);
        let limit_above_plan = Some(ErrorCode::LimitAbovePlan);
        assert_eq!(
            refused(
                WafPolicy {
                    client: VelocityLimit::new(10_000_000, 1),
                    ..current.clone()
                },
                KeyMode::Live
            ),
            limit_above_plan
        );
        // The same count over a shorter window is a higher rate.
        assert_eq!(
            refused(
                WafPolicy {
                    client: VelocityLimit::new(6_000, 59),
                    ..current.clone()
                },
                KeyMode::Live
            ),
            limit_above_plan
        );
        assert_eq!(
            refused(
                WafPolicy {
                    monthly_email_quota: 10_001,
                    ..current.clone()
                },
                KeyMode::Live
            ),
            limit_above_plan
        );
        assert_eq!(
            refused(
                WafPolicy {
                    recipient_limit: 51,
                    ..current.clone()
                },
                KeyMode::Live
            ),
            limit_above_plan
        );
        // At the ceiling, or below it, is fine; a lower rate over a longer
        // window too.
        for fine in [
            WafPolicy {
                client: VelocityLimit::new(6_000, 60),
                ..current.clone()
            },
            WafPolicy {
                client: VelocityLimit::new(100, 3600),
                ..current.clone()
            },
            WafPolicy {
                monthly_email_quota: 10,
                ..current.clone()
            },
        ] {
            assert!(plan.admits(KeyMode::Live, &current, &fine).is_ok());
        }
        // Test issuers get the (smaller) test quota.
        assert_eq!(
            refused(
                WafPolicy {
                    monthly_email_quota: 5_000,
                    ..current.clone()
                },
                KeyMode::Test
            ),
            limit_above_plan
        );
    }

    #[test]
    fn a_lowered_plan_caps_what_it_no_longer_admits() {
        let plan = AccountPlan {
            max_client: VelocityLimit::new(10, 60),
            test_monthly_email_quota: 5,
            ..AccountPlan::default()
        };
        let policy = WafPolicy::default();
        assert_eq!(
            plan.effective_velocity(&policy, RouteLimit::Client),
            VelocityLimit::new(10, 60)
        );
        assert_eq!(
            plan.effective_velocity(&policy, RouteLimit::Backend),
            policy.backend
        );
        assert_eq!(plan.effective_quota(KeyMode::Test, &policy), 5);
        assert_eq!(plan.effective_quota(KeyMode::Live, &policy), 10_000);
        // The untouched default is not a change, so other edits still pass.
        let edited = WafPolicy {
            strikes_to_ban: 5,
            ..policy.clone()
        };
        assert!(plan.admits(KeyMode::Test, &policy, &edited).is_ok());
    }
}
