//! Notices to an account's owner: a credential changed, a factor locked, or
//! someone tried to sign up with their address. They carry no code and no
//! link, so a notice can never be used to take anything over.

use crate::mail::Letter;
use crate::{signin, Error, State};
use idm_core::proto::IssuerContext;
use idm_core::UserId;

#[derive(Debug, Clone, Copy)]
pub enum Notice {
    TotpEnabled,
    TotpReplaced,
    TotpDisabled,
    BackupCodesRegenerated,
    PasswordChanged,
    TotpLocked,
    /// Sign-up was attempted with an address that already has an account.
    SignUpAttempt,
    /// Users (issue 11): the password was removed.
    PasswordRemoved,
    /// Users (issue 11): sent to the old address once a new one replaced it.
    EmailChanged,
}

impl Notice {
    pub(crate) fn subject(self) -> &'static str {
        match self {
            Notice::TotpEnabled => "Two-step verification was turned on",
            Notice::TotpReplaced => "Your authenticator app was replaced",
            Notice::TotpDisabled => "Two-step verification was turned off",
            Notice::BackupCodesRegenerated => "New backup codes were created",
            Notice::PasswordChanged => "Your password was changed",
            Notice::TotpLocked => "Sign-in codes locked after repeated failures",
            Notice::SignUpAttempt => "Someone tried to sign up with your address",
            Notice::PasswordRemoved => "Your password was removed",
            Notice::EmailChanged => "Your email address was changed",
        }
    }

    pub(crate) fn body(self) -> &'static str {
        match self {
            Notice::TotpEnabled => "Two-step verification with an authenticator app was turned on for your account.",
            Notice::TotpReplaced => "The authenticator app of your account was replaced by a new one; codes from the old one no longer work.",
            Notice::TotpDisabled => "Two-step verification was turned off for your account, and its backup codes were deleted.",
            Notice::BackupCodesRegenerated => "New backup codes were created for your account; the old ones no longer work.",
            Notice::PasswordChanged => "The password of your account was changed, and your other sessions were signed out.",
            Notice::TotpLocked => "Authenticator codes for your account were entered wrongly too many times, so they are locked. Whoever tried knew your first sign-in step (your password or an email code): consider changing your password. Sign in with one of your backup codes to unlock them.",
            Notice::SignUpAttempt => "Someone tried to create an account with this address, which already has one. Nothing was changed. If it was you, sign in instead (or reset your password).",
            Notice::PasswordRemoved => "The password of your account was removed. You sign in with a link or a code sent to your email address from now on.",
            Notice::EmailChanged => "The email address of your account was changed to another address, which was confirmed with a code sent to it. This address no longer signs in to the account.",
        }
    }
}

/// Queues `notice` for `to`, in the name of the issuer of `ctx`.
pub async fn send(
    state: &State,
    ctx: &IssuerContext,
    to: &str,
    notice: Notice,
) -> Result<(), Error> {
    state.mail.send(ctx, to, &Letter::Notice(notice)).await?;
    Ok(())
}

/// Queues `notice` for the address of `user`.
pub async fn send_to_user(
    state: &State,
    ctx: &IssuerContext,
    user: &UserId,
    notice: Notice,
) -> Result<(), Error> {
    let found = signin::get_user(state, ctx, user.clone()).await?;
    send(state, ctx, &found.email, notice).await
}
