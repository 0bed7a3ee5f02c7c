//! Stable, machine-readable error codes shared by every service and mapped to
//! HTTP exactly once (in edge-guard and the account admin API).

use serde::{Deserialize, Serialize};

/// The contract's error codes. Adding one is fine; renaming one breaks clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    Unauthenticated,
    InvalidApiKey,
    InvalidCredentials,
    SessionInvalid,
    SessionRevoked,
    SessionCompromised,
    RefreshTokenReused,
    MfaRequired,
    InsufficientScope,
    OriginNotAllowed,
    IpBanned,
    ResidencyViolation,
    NotFound,
    MethodNotAllowed,
    Conflict,
    PayloadTooLarge,
    ValidationFailed,
    InvalidEmail,
    DisposableEmail,
    WeakPassword,
    CodeInvalid,
    CodeExpired,
    TooManyAttempts,
    RateLimited,
    QuotaExceeded,
    RegionUnavailable,
    UpstreamUnavailable,
    /// Shed before queueing (or refused rather than answered unsafely), with `Retry-After`.
    Overloaded,
    Internal,
    /// A fresh second factor or re-authentication is needed in the request.
    StepUpRequired,
    /// Too many failures across attempts: the factor waits for a recovery path.
    FactorLocked,
    /// A tenant asked for a limit above its account's plan (the operator's
    /// ceiling); `details.field` names it.
    LimitAbovePlan,
    /// The account's plan allows no more of this (issuers, for example).
    PlanLimitReached,
    /// A bus request from a service the permission table does not allow to
    /// make it (libs/bus/src/acl.rs). Internal: a public client seeing it
    /// means the table and the code drifted apart.
    CallerNotAllowed,
}

impl ErrorCode {
    pub fn http_status(self) -> u16 {
        use ErrorCode::*;
        match self {
            InvalidRequest | LimitAbovePlan => 400,
            Unauthenticated | InvalidApiKey | InvalidCredentials | SessionInvalid
            | SessionRevoked | SessionCompromised | RefreshTokenReused | MfaRequired
            | StepUpRequired => 401,
            InsufficientScope | OriginNotAllowed | IpBanned | ResidencyViolation => 403,
            NotFound => 404,
            MethodNotAllowed => 405,
            Conflict => 409,
            PayloadTooLarge => 413,
            ValidationFailed | InvalidEmail | DisposableEmail | WeakPassword | CodeInvalid
            | CodeExpired => 422,
            TooManyAttempts | RateLimited | QuotaExceeded | FactorLocked => 429,
            RegionUnavailable | UpstreamUnavailable | Overloaded => 503,
            Internal => 500,
            CallerNotAllowed | PlanLimitReached => 403,
        }
    }

    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            InvalidRequest => "invalid_request",
            Unauthenticated => "unauthenticated",
            InvalidApiKey => "invalid_api_key",
            InvalidCredentials => "invalid_credentials",
            SessionInvalid => "session_invalid",
            SessionRevoked => "session_revoked",
            SessionCompromised => "session_compromised",
            RefreshTokenReused => "refresh_token_reused",
            MfaRequired => "mfa_required",
            InsufficientScope => "insufficient_scope",
            OriginNotAllowed => "origin_not_allowed",
            IpBanned => "ip_banned",
            ResidencyViolation => "residency_violation",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Conflict => "conflict",
            PayloadTooLarge => "payload_too_large",
            ValidationFailed => "validation_failed",
            InvalidEmail => "invalid_email",
            DisposableEmail => "disposable_email",
            WeakPassword => "weak_password",
            CodeInvalid => "code_invalid",
            CodeExpired => "code_expired",
            TooManyAttempts => "too_many_attempts",
            RateLimited => "rate_limited",
            QuotaExceeded => "quota_exceeded",
            RegionUnavailable => "region_unavailable",
            UpstreamUnavailable => "upstream_unavailable",
            Overloaded => "overloaded",
            Internal => "internal",
            StepUpRequired => "step_up_required",
            FactorLocked => "factor_locked",
            CallerNotAllowed => "caller_not_allowed",
            LimitAbovePlan => "limit_above_plan",
            PlanLimitReached => "plan_limit_reached",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_the_serde_spelling() {
        for code in [
            ErrorCode::InvalidApiKey,
            ErrorCode::UpstreamUnavailable,
            ErrorCode::PayloadTooLarge,
            ErrorCode::StepUpRequired,
            ErrorCode::FactorLocked,
            ErrorCode::CallerNotAllowed,
            ErrorCode::LimitAbovePlan,
            ErrorCode::PlanLimitReached,
        ] {
            let json = serde_json::to_value(code).ok();
            assert_eq!(
                json,
                Some(serde_json::Value::String(code.as_str().to_owned()))
            );
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as it travels between services and out to clients: a stable code
/// plus a human message that never contains secrets or personal data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Extra machine-readable detail (for example `mfa_token`), never secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// Logs `cause` in full and returns an opaque 500: callers see a stable
    /// code and the request id, never internals.
    pub fn internal_from(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::internal()
    }

    /// An opaque 500: the cause is logged by the caller, never sent.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }

    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::UpstreamUnavailable, message)
    }
}
