//! Step-up: a request that changes a credential must carry a proof of the
//! account's credentials itself. A session, however fresh, is not enough:
//! whoever stole the cookie would otherwise own the account for good.
//!
//! Which proofs count depends on what is changed:
//! - the second factor (replacing or removing TOTP, new backup codes): only
//!   the current second factor (a TOTP code or a backup code), so a stolen
//!   session plus a phished password still cannot remove it;
//! - the password: the current password, the second factor, or a code mailed
//!   to the account's address (what password reset will rely on anyway).

use crate::signin::at_least;
use crate::{passwordless, second_factor, signin, Error, State};
use idm_core::proto::auth::{SessionUser, StepUp};
use idm_core::proto::store::GetUser;
use idm_core::proto::store::{self, Credentials};
use idm_core::proto::SecretText;
use idm_core::{ApiError, Email, ErrorCode};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changing {
    SecondFactor,
    Password,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    Password,
    Totp,
    BackupCode,
    EmailCode,
}

impl Proof {
    fn field(self) -> &'static str {
        match self {
            Proof::Password => "current_password",
            Proof::Totp => "totp_code",
            Proof::BackupCode => "backup_code",
            Proof::EmailCode => "email_code",
        }
    }
}

pub async fn credentials(state: &State, session: &SessionUser) -> Result<Credentials, Error> {
    Ok(state
        .bus
        .send_to(
            session.region,
            &store::GetCredentials(GetUser {
                issuer_id: session.ctx.issuer_id.clone(),
                user_id: session.user_id.clone(),
            }),
        )
        .await?)
}

fn accepted(changing: Changing, credentials: &Credentials) -> Vec<Proof> {
    let mut proofs = Vec::new();
    if changing == Changing::Password && credentials.has_password {
        proofs.push(Proof::Password);
    }
    if credentials.mfa_enabled {
        proofs.extend([Proof::Totp, Proof::BackupCode]);
    }
    if changing == Changing::Password {
        proofs.push(Proof::EmailCode);
    }
    proofs
}

fn given(step_up: &StepUp) -> Vec<(Proof, &SecretText)> {
    [
        (Proof::Password, &step_up.current_password),
        (Proof::Totp, &step_up.totp_code),
        (Proof::BackupCode, &step_up.backup_code),
        (Proof::EmailCode, &step_up.email_code),
    ]
    .into_iter()
    .filter_map(|(proof, value)| value.as_ref().map(|v| (proof, v)))
    .collect()
}

fn required(proofs: &[Proof]) -> ApiError {
    ApiError::new(
        ErrorCode::StepUpRequired,
        "this change needs a proof of your credentials in the same request",
    )
    .with_details(serde_json::json!({
        "accepted_proofs": proofs.iter().map(|p| p.field()).collect::<Vec<_>>()
    }))
}

/// Checks the request's proof for `changing`, or refuses: `step_up_required`
/// (none given, or one that does not count for this change), or the proof's
/// own failure (`invalid_credentials`, `code_invalid`, `factor_locked`).
/// Failures answer no sooner than the minimum verification time.
pub async fn require(
    state: &State,
    session: &SessionUser,
    step_up: &StepUp,
    changing: Changing,
    credentials: &Credentials,
) -> Result<(), Error> {
    let started = Instant::now();
    let result = check(state, session, step_up, changing, credentials).await;
    if result.is_err() {
        at_least(started, state.min_verify).await;
    }
    result
}

async fn check(
    state: &State,
    session: &SessionUser,
    step_up: &StepUp,
    changing: Changing,
    credentials: &Credentials,
) -> Result<(), Error> {
    let proofs = accepted(changing, credentials);
    let given = given(step_up);
    if given.len() > 1 {
        return Err(ApiError::validation("give exactly one step-up proof").into());
    }
    let Some(&(proof, value)) = given.first() else {
        return Err(required(&proofs).into());
    };
    if !proofs.contains(&proof) {
        return Err(required(&proofs).into());
    }
    let (ctx, user, region) = (&session.ctx, &session.user_id, session.region);
    match proof {
        Proof::Password => {
            if value.expose().len() > 1024 {
                return Err(wrong_password().into());
            }
            let checked = state
                .bus
                .send_to(
                    region,
                    &store::VerifyPassword {
                        issuer_id: ctx.issuer_id.clone(),
                        user_id: Some(user.clone()),
                        password: value.clone(),
                    },
                )
                .await?;
            if !checked.valid {
                return Err(wrong_password().into());
            }
        }
        Proof::Totp => {
            second_factor::check_totp(state, ctx, user, region, value.expose()).await?;
        }
        Proof::BackupCode => {
            second_factor::use_backup_code(state, ctx, user, region, value.expose()).await?;
        }
        Proof::EmailCode => {
            let owner = signin::get_user(state, ctx, user.clone()).await?;
            let email = Email::parse(&owner.email)?;
            passwordless::redeem_email_code(state, ctx, &email, value.expose()).await?;
        }
    }
    Ok(())
}

fn wrong_password() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidCredentials,
        "the current password is not correct",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(has_password: bool, mfa_enabled: bool) -> Credentials {
        Credentials {
            has_password,
            mfa_enabled,
            email_verified: true,
        }
    }

    #[test]
    fn a_password_never_stands_in_for_the_second_factor() {
        assert_eq!(
            accepted(Changing::SecondFactor, &creds(true, true)),
            vec![Proof::Totp, Proof::BackupCode]
        );
        assert!(accepted(Changing::SecondFactor, &creds(true, false)).is_empty());
    }

    #[test]
    fn a_password_change_takes_whatever_the_account_has() {
        assert_eq!(
            accepted(Changing::Password, &creds(true, true)),
            vec![
                Proof::Password,
                Proof::Totp,
                Proof::BackupCode,
                Proof::EmailCode
            ]
        );
        assert_eq!(
            accepted(Changing::Password, &creds(false, false)),
            vec![Proof::EmailCode]
        );
    }
}
