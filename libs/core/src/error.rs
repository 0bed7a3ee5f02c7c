//! Stable, machine-readable error codes shared by every service and mapped to
//! HTTP exactly once (in edge-guard and the account admin API).

use serde::{Deserialize, Serialize};

/// The contract's error codes. Adding one is fine; renaming one breaks clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
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
    /// An `Idempotency-Key` reused with another request body (API.md).
    IdempotencyConflict,
    /// An `Idempotency-Key` whose first request is still running.
    IdempotencyInProgress,
    /// A cookie-authenticated request that changes state came without the
    /// `Idm-Api-Key` header (docs/EDGE.md, "CSRF").
    CsrfCheckFailed,
    /// The API key belongs to another issuer than the one this host serves.
    IssuerHostMismatch,
    /// Cookie sessions are served only on an issuer's own host.
    SessionModeUnavailable,
    /// The domain's DNS TXT record does not prove control (yet).
    DomainNotVerified,
    /// A right TOTP code whose time step was already used (a replay, or a
    /// second sign-in within the same 30 s): wait for the next code.
    CodeAlreadyUsed,
    // deletion: user deletion as a durable workflow
    /// The user is being deleted: it can no longer be read, changed or
    /// signed in to (the error's `deletion_id` names the job).
    DeletionInProgress,
    /// A webhook URL that points inside (loopback, private, link-local,
    /// metadata, ...).
    SsrfRefused,
    /// The user is being moved to another region: it can be neither read,
    /// changed nor deleted until the move finishes (`move_id` names the job).
    UserBeingMoved,
}

/// One error code: its wire spelling, its HTTP status and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorInfo {
    pub code: ErrorCode,
    /// As it appears in `error.code` (the serde spelling).
    pub name: &'static str,
    pub status: u16,
    /// What the code means, for documentation and as a default message.
    pub message: &'static str,
}

/// Every error code, in the enum's order (a test checks): the one table
/// codes, statuses and messages come from. `docs/ERRORS.md` and
/// `docs/openapi.json` must list every one (tested in idm-telemetry).
pub const ERROR_CODES: &[ErrorInfo] = &[
    ErrorInfo {
        code: ErrorCode::InvalidRequest,
        name: "invalid_request",
        status: 400,
        message: "The request is malformed: a body, parameter or header that does not parse.",
    },
    ErrorInfo {
        code: ErrorCode::Unauthenticated,
        name: "unauthenticated",
        status: 401,
        message: "No credentials were given, or they are not valid for this route.",
    },
    ErrorInfo {
        code: ErrorCode::InvalidApiKey,
        name: "invalid_api_key",
        status: 401,
        message: "The API key is malformed, unknown, revoked or of the wrong kind.",
    },
    ErrorInfo {
        code: ErrorCode::InvalidCredentials,
        name: "invalid_credentials",
        status: 401,
        message: "The email address or password is not right.",
    },
    ErrorInfo {
        code: ErrorCode::SessionInvalid,
        name: "session_invalid",
        status: 401,
        message: "The session token or refresh token is not valid.",
    },
    ErrorInfo {
        code: ErrorCode::SessionRevoked,
        name: "session_revoked",
        status: 401,
        message: "The session was revoked.",
    },
    ErrorInfo {
        code: ErrorCode::SessionCompromised,
        name: "session_compromised",
        status: 401,
        message: "The session was revoked because a refresh token was reused.",
    },
    ErrorInfo {
        code: ErrorCode::RefreshTokenReused,
        name: "refresh_token_reused",
        status: 401,
        message: "The refresh token was already used.",
    },
    ErrorInfo {
        code: ErrorCode::MfaRequired,
        name: "mfa_required",
        status: 401,
        message: "A second factor is needed to finish signing in (`mfa_token` in the error).",
    },
    ErrorInfo {
        code: ErrorCode::InsufficientScope,
        name: "insufficient_scope",
        status: 403,
        message: "The API key lacks a scope this route needs.",
    },
    ErrorInfo {
        code: ErrorCode::OriginNotAllowed,
        name: "origin_not_allowed",
        status: 403,
        message: "The request's origin is not one of the issuer's allowed origins.",
    },
    ErrorInfo {
        code: ErrorCode::IpBanned,
        name: "ip_banned",
        status: 403,
        message: "The caller's network is banned for a while (`Retry-After`).",
    },
    ErrorInfo {
        code: ErrorCode::ResidencyViolation,
        name: "residency_violation",
        status: 403,
        message: "The data would leave the region its residency policy pins it to.",
    },
    ErrorInfo {
        code: ErrorCode::NotFound,
        name: "not_found",
        status: 404,
        message: "No such resource (or route).",
    },
    ErrorInfo {
        code: ErrorCode::MethodNotAllowed,
        name: "method_not_allowed",
        status: 405,
        message: "The route does not answer this method.",
    },
    ErrorInfo {
        code: ErrorCode::Conflict,
        name: "conflict",
        status: 409,
        message: "The request conflicts with the resource's state (an existing user, for example).",
    },
    ErrorInfo {
        code: ErrorCode::PayloadTooLarge,
        name: "payload_too_large",
        status: 413,
        message: "The body is larger than the platform accepts.",
    },
    ErrorInfo {
        code: ErrorCode::ValidationFailed,
        name: "validation_failed",
        status: 422,
        message: "A field is well-formed but not acceptable (`details.field` names it).",
    },
    ErrorInfo {
        code: ErrorCode::InvalidEmail,
        name: "invalid_email",
        status: 422,
        message: "The email address is not valid.",
    },
    ErrorInfo {
        code: ErrorCode::DisposableEmail,
        name: "disposable_email",
        status: 422,
        message: "The email address belongs to a disposable-mail domain.",
    },
    ErrorInfo {
        code: ErrorCode::WeakPassword,
        name: "weak_password",
        status: 422,
        message: "The password is too weak or too common.",
    },
    ErrorInfo {
        code: ErrorCode::CodeInvalid,
        name: "code_invalid",
        status: 422,
        message: "The code is not valid.",
    },
    ErrorInfo {
        code: ErrorCode::CodeExpired,
        name: "code_expired",
        status: 422,
        message: "The code has expired.",
    },
    ErrorInfo {
        code: ErrorCode::TooManyAttempts,
        name: "too_many_attempts",
        status: 429,
        message: "Too many failed attempts; try again later.",
    },
    ErrorInfo {
        code: ErrorCode::RateLimited,
        name: "rate_limited",
        status: 429,
        message: "Too many requests; try again later (`Retry-After`).",
    },
    ErrorInfo {
        code: ErrorCode::QuotaExceeded,
        name: "quota_exceeded",
        status: 429,
        message: "The issuer's quota for this is used up for now.",
    },
    ErrorInfo {
        code: ErrorCode::RegionUnavailable,
        name: "region_unavailable",
        status: 503,
        message: "The region holding the data cannot be reached right now (`Retry-After`).",
    },
    ErrorInfo {
        code: ErrorCode::UpstreamUnavailable,
        name: "upstream_unavailable",
        status: 503,
        message: "A platform service cannot be reached right now (`Retry-After`).",
    },
    ErrorInfo {
        code: ErrorCode::Overloaded,
        name: "overloaded",
        status: 503,
        message: "The platform is shedding load; try again shortly (`Retry-After`).",
    },
    ErrorInfo {
        code: ErrorCode::Internal,
        name: "internal",
        status: 500,
        message: "Something failed on the platform's side; the request id finds it in the logs.",
    },
    ErrorInfo {
        code: ErrorCode::StepUpRequired,
        name: "step_up_required",
        status: 401,
        message: "A fresh proof (password, TOTP, backup or email code) is needed in the request.",
    },
    ErrorInfo {
        code: ErrorCode::FactorLocked,
        name: "factor_locked",
        status: 429,
        message: "Too many failures on this factor: it waits for a recovery path.",
    },
    ErrorInfo {
        code: ErrorCode::LimitAbovePlan,
        name: "limit_above_plan",
        status: 400,
        message: "A limit above the account's plan was asked for (`details.field` names it).",
    },
    ErrorInfo {
        code: ErrorCode::PlanLimitReached,
        name: "plan_limit_reached",
        status: 403,
        message: "The account's plan allows no more of this.",
    },
    ErrorInfo {
        code: ErrorCode::CallerNotAllowed,
        name: "caller_not_allowed",
        status: 403,
        message: "A service call the bus permission table does not allow (internal).",
    },
    ErrorInfo {
        code: ErrorCode::IdempotencyConflict,
        name: "idempotency_conflict",
        status: 409,
        message: "The `Idempotency-Key` was used with another request body.",
    },
    ErrorInfo {
        code: ErrorCode::IdempotencyInProgress,
        name: "idempotency_in_progress",
        status: 409,
        message: "The first request with this `Idempotency-Key` is still running.",
    },
    ErrorInfo {
        code: ErrorCode::CsrfCheckFailed,
        name: "csrf_check_failed",
        status: 403,
        message:
            "A cookie-authenticated request that changes state must carry the `Idm-Api-Key` header.",
    },
    ErrorInfo {
        code: ErrorCode::IssuerHostMismatch,
        name: "issuer_host_mismatch",
        status: 403,
        message: "The API key belongs to another issuer than the one this host serves.",
    },
    ErrorInfo {
        code: ErrorCode::SessionModeUnavailable,
        name: "session_mode_unavailable",
        status: 400,
        message:
            "Cookie sessions (`Idm-Session-Mode: cookie`) are served only on an issuer's own host.",
    },
    ErrorInfo {
        code: ErrorCode::DomainNotVerified,
        name: "domain_not_verified",
        status: 422,
        message: "The domain's DNS TXT record does not prove control of it (yet).",
    },
    ErrorInfo {
        code: ErrorCode::CodeAlreadyUsed,
        name: "code_already_used",
        status: 422,
        message:
            "The authenticator code was already used: wait for the next code and enter that one.",
    },
    ErrorInfo {
        code: ErrorCode::DeletionInProgress,
        name: "deletion_in_progress",
        status: 409,
        message: "The user is being deleted: it can no longer be read, changed or signed in to.",
    },
    ErrorInfo {
        code: ErrorCode::SsrfRefused,
        name: "ssrf_refused",
        status: 422,
        message: "The webhook URL points inside (a loopback, private, link-local, multicast or metadata address).",
    },
    ErrorInfo {
        code: ErrorCode::UserBeingMoved,
        name: "user_being_moved",
        status: 409,
        message: "The user is being moved to another region: retry once the move (`move_id`) has finished.",
    },
];

impl ErrorCode {
    /// This code's row of [`ERROR_CODES`].
    pub fn info(self) -> &'static ErrorInfo {
        // The table is in the enum's order (tested), so the discriminant is
        // the index; the search keeps a drifted table from answering wrong.
        ERROR_CODES
            .get(self as usize)
            .filter(|info| info.code == self)
            .or_else(|| ERROR_CODES.iter().find(|info| info.code == self))
            .unwrap_or(&INTERNAL)
    }

    pub fn http_status(self) -> u16 {
        self.info().status
    }

    pub fn as_str(self) -> &'static str {
        self.info().name
    }

    /// Every code.
    pub fn all() -> impl Iterator<Item = ErrorCode> {
        ERROR_CODES.iter().map(|info| info.code)
    }
}

const INTERNAL: ErrorInfo = ErrorInfo {
    code: ErrorCode::Internal,
    name: "internal",
    status: 500,
    message: "internal error",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_enum_order_and_names_match_the_serde_spelling() {
        for (i, info) in ERROR_CODES.iter().enumerate() {
            assert_eq!(info.code as usize, i, "{} is out of order", info.name);
            let json = serde_json::to_value(info.code).ok();
            assert_eq!(json, Some(serde_json::Value::String(info.name.to_owned())));
            let back: Option<ErrorCode> =
                serde_json::from_value(serde_json::Value::String(info.name.to_owned())).ok();
            assert_eq!(back, Some(info.code));
        }
        // The last variant is in the table, so every one before it is too.
        assert_eq!(
            ERROR_CODES.last().map(|i| i.code),
            Some(ErrorCode::UserBeingMoved)
        );
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
