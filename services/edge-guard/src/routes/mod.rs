//! The public HTTP API (API.md), one module per resource, mounted from one
//! route table. Each handler authorises first (with the access class the
//! table gives its route), turns the body into domain types, then makes one
//! bus call.

mod api_keys;
mod client;
mod credentials;
mod domains;
mod issuer;
mod passwordless;
mod personal_tokens;
mod profiles;
mod recovery;
pub(crate) mod sessions;
mod users;
mod verifications;
// deletion: organizations and user deletion
mod deletions;
// Regions at scale: moving a user between regions.
mod moves;
mod organizations;
// Webhooks and the audit log (issue 12).
mod audit;
mod webhooks;

use crate::access::Access;
use crate::App;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Extension, Json, Router};
use http::Method;
use idm_core::scope::{Level, Resource};
use idm_core::{ApiError, ErrorCode, Scope};
use idm_telemetry::http::HttpError;
use std::sync::Arc;

/// One public route: method, path, who may call it, its handler, and what
/// the OpenAPI document says of it (`crate::openapi` builds the document from
/// this table, so a route cannot be served without being described).
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    /// Whether the route acts on the caller's own session (a session token in
    /// `Authorization: Bearer` next to `Idm-Api-Key`, or the session cookie).
    pub session: bool,
    /// Error codes the route answers beyond those every route of its access
    /// class answers (`openapi::common_errors`).
    pub errors: &'static [ErrorCode],
    handler: fn() -> MethodRouter<Arc<App>>,
    /// The handler's `#[utoipa::path]` description: its schemas and operation.
    pub(crate) doc: fn() -> RouteDoc,
}

/// What `utoipa_axum::routes!` gives for one handler, less its router.
pub(crate) type RouteDoc = (
    Vec<(
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    )>,
    utoipa::openapi::path::Paths,
);

/// `route!(METHOD "/path", access, module::handler [, session: true] [, errors: [Code, ...]])`:
/// one line of the table.
macro_rules! route {
    ($method:ident $path:literal, $access:expr, $module:ident :: $handler:ident
        $(, session: $session:literal)? $(, errors: [$($code:ident),* $(,)?])?) => {
        Route {
            method: Method::$method,
            path: $path,
            access: $access,
            session: false $(|| $session)?,
            errors: &[$($(ErrorCode::$code),*)?],
            handler: || on(MethodFilter::$method, $module::$handler),
            doc: || {
                let (schemas, paths, _): (_, _, MethodRouter<Arc<App>>) =
                    utoipa_axum::routes!($module::$handler);
                (schemas, paths)
            },
        }
    };
}

const fn backend(resource: Resource, level: Level) -> Access {
    Access::Backend(Scope::new(resource, level))
}

use Access::{Client, Verification};
use Level::{Delete, Manage, Read, Write};
use Resource::{ApiKeys, Audit, Issuers, Organizations, Sessions, Users, Webhooks};

/// Every public route, in one place. The router is built from this table
/// alone and each handler's `authorize()` takes its access class from here,
/// so the scope matrix test (`tests/tests/e2e/scopes.rs`), which walks this
/// table, covers every route there is. Adding a route is adding a line.
pub static ROUTES: &[Route] = &[
    route!(GET "/v1/issuer", backend(Issuers, Read), issuer::get_issuer),
    route!(PATCH "/v1/issuer", backend(Issuers, Manage), issuer::update_issuer,
        errors: [ValidationFailed, LimitAbovePlan]),
    route!(POST "/v1/issuers", backend(Issuers, Manage), issuer::create_issuer,
        errors: [ValidationFailed, LimitAbovePlan, PlanLimitReached]),
    route!(POST "/v1/issuer/domains", backend(Issuers, Manage), domains::add,
        errors: [ValidationFailed, Conflict, PlanLimitReached]),
    route!(GET "/v1/issuer/domains", backend(Issuers, Read), domains::list),
    route!(DELETE "/v1/issuer/domains/{domain}", backend(Issuers, Manage), domains::remove,
        errors: [NotFound]),
    route!(POST "/v1/issuer/domains/{domain}/verify", backend(Issuers, Manage), domains::verify,
        errors: [NotFound, DomainNotVerified]),
    route!(POST "/v1/api_keys", backend(ApiKeys, Manage), api_keys::create,
        errors: [ValidationFailed]),
    route!(GET "/v1/api_keys", backend(ApiKeys, Read), api_keys::list,
        errors: [ValidationFailed, NotFound]),
    route!(DELETE "/v1/api_keys/{id}", backend(ApiKeys, Delete), api_keys::revoke,
        errors: [NotFound]),
    route!(POST "/v1/users", backend(Users, Write), users::create,
        errors: [ValidationFailed, InvalidEmail, DisposableEmail, WeakPassword, Conflict,
            ResidencyViolation, RegionUnavailable]),
    route!(GET "/v1/users", backend(Users, Read), profiles::list,
        errors: [ValidationFailed, InvalidEmail, DisposableEmail, NotFound, ResidencyViolation,
            RegionUnavailable]),
    route!(GET "/v1/users/{id}", backend(Users, Read), users::get,
        errors: [NotFound, DeletionInProgress, UserBeingMoved]),
    route!(GET "/v1/users/{id}/residency", backend(Users, Read), users::residency,
        errors: [NotFound, ResidencyViolation, UserBeingMoved]),
    route!(POST "/v1/sessions/verify", backend(Sessions, Read), sessions::verify,
        errors: [SessionInvalid, SessionRevoked, SessionCompromised]),
    route!(POST "/v1/sessions/{id}/revoke", backend(Sessions, Manage), sessions::revoke,
        errors: [NotFound]),
    route!(GET "/v1/users/{id}/sessions", backend(Sessions, Read), sessions::list_for_user,
        errors: [NotFound, ValidationFailed]),
    route!(POST "/v1/users/{id}/sessions/revoke_all", backend(Sessions, Manage), sessions::revoke_all,
        errors: [NotFound]),
    route!(POST "/v1/session_keys/rotate", backend(Sessions, Manage), sessions::rotate_signing_key),
    route!(POST "/v1/session_keys/revoke", backend(Sessions, Manage), sessions::revoke_signing_keys),
    route!(POST "/v1/users/{id}/personal_tokens", backend(Users, Manage), personal_tokens::create,
        errors: [NotFound, ValidationFailed]),
    route!(GET "/v1/users/{id}/personal_tokens", backend(Users, Read), personal_tokens::list,
        errors: [NotFound, ValidationFailed]),
    route!(DELETE "/v1/users/{id}/personal_tokens/{token_id}", backend(Users, Manage), personal_tokens::revoke,
        errors: [NotFound]),
    route!(POST "/v1/personal_tokens/verify", backend(Users, Read), personal_tokens::verify,
        errors: [Unauthenticated, NotFound]),
    route!(POST "/v1/users/{id}/factors/unlock", backend(Users, Manage), users::unlock_factors,
        errors: [NotFound]),
    route!(POST "/v1/client/sign_up", Client, client::sign_up,
        errors: [ValidationFailed, InvalidEmail, DisposableEmail, WeakPassword, Conflict,
            ResidencyViolation, RegionUnavailable]),
    route!(POST "/v1/client/sign_in", Client, client::sign_in,
        errors: [InvalidCredentials, MfaRequired, ValidationFailed, TooManyAttempts, FactorLocked,
            RegionUnavailable]),
    route!(GET "/v1/client/me", Client, client::me, session: true, errors: [NotFound]),
    route!(POST "/v1/client/token/refresh", Client, client::refresh,
        errors: [SessionInvalid, SessionRevoked, SessionCompromised, RefreshTokenReused,
            RegionUnavailable, ValidationFailed, CsrfCheckFailed]),
    route!(POST "/v1/client/sign_out", Client, client::sign_out, session: true, errors: [NotFound]),
    route!(GET "/v1/client/sessions", Client, client::my_sessions, session: true,
        errors: [NotFound, ValidationFailed]),
    route!(POST "/v1/client/magic_links", Client, passwordless::send_magic_link,
        errors: [ValidationFailed, InvalidEmail, DisposableEmail, TooManyAttempts, QuotaExceeded]),
    route!(POST "/v1/client/magic_links/verify", Client, passwordless::verify_magic_link,
        errors: [CodeInvalid, CodeExpired, TooManyAttempts, ResidencyViolation, RegionUnavailable]),
    route!(POST "/v1/client/email_codes", Client, passwordless::send_email_code,
        errors: [ValidationFailed, InvalidEmail, DisposableEmail, TooManyAttempts, QuotaExceeded]),
    route!(POST "/v1/client/email_codes/verify", Client, passwordless::verify_email_code,
        errors: [InvalidEmail, DisposableEmail, CodeInvalid, CodeExpired, TooManyAttempts,
            FactorLocked, ResidencyViolation, RegionUnavailable]),
    route!(POST "/v1/client/mfa/totp", Client, passwordless::enroll_totp, session: true,
        errors: [Conflict]),
    route!(DELETE "/v1/client/mfa/totp", Client, credentials::remove_totp, session: true,
        errors: [StepUpRequired, InvalidCredentials, CodeInvalid, CodeAlreadyUsed, ValidationFailed,
            FactorLocked, Conflict]),
    route!(POST "/v1/client/mfa/backup_codes", Client, credentials::regenerate_backup_codes, session: true,
        errors: [StepUpRequired, InvalidCredentials, CodeInvalid, CodeAlreadyUsed, ValidationFailed,
            FactorLocked, Conflict]),
    route!(POST "/v1/client/password", Client, credentials::change_password, session: true,
        errors: [StepUpRequired, InvalidCredentials, CodeInvalid, CodeAlreadyUsed, ValidationFailed,
            WeakPassword, FactorLocked]),
    route!(POST "/v1/client/mfa/totp/confirm", Client, passwordless::confirm_totp, session: true,
        errors: [CodeInvalid, CodeAlreadyUsed, StepUpRequired, InvalidCredentials, ValidationFailed,
            FactorLocked, Conflict]),
    route!(POST "/v1/client/mfa/verify", Client, passwordless::verify_mfa,
        errors: [SessionInvalid, CodeInvalid, CodeAlreadyUsed, ValidationFailed, TooManyAttempts,
            FactorLocked, InvalidCredentials]),
    route!(POST "/v1/verifications", Verification, verifications::start,
        errors: [ValidationFailed, InvalidEmail, DisposableEmail, TooManyAttempts, QuotaExceeded]),
    route!(POST "/v1/verifications/check", Verification, verifications::check,
        errors: [InvalidEmail, CodeInvalid, CodeExpired, TooManyAttempts]),
    // Users (issue 11): profiles, credentials, devices, consent.
    route!(PATCH "/v1/users/{id}", backend(Users, Write), profiles::update,
        errors: [NotFound, ValidationFailed, InvalidEmail, DisposableEmail, Conflict,
            TooManyAttempts, QuotaExceeded, DeletionInProgress]),
    route!(GET "/v1/users/{id}/devices", backend(Users, Read), profiles::devices,
        errors: [NotFound, ValidationFailed, DeletionInProgress]),
    route!(DELETE "/v1/users/{id}/devices/{device_id}", backend(Sessions, Manage), profiles::revoke_device,
        errors: [NotFound]),
    route!(POST "/v1/users/{id}/consents", backend(Users, Write), profiles::add_consent,
        errors: [NotFound, ValidationFailed, DeletionInProgress]),
    route!(GET "/v1/users/{id}/consents", backend(Users, Read), profiles::consents,
        errors: [NotFound, ValidationFailed, DeletionInProgress]),
    route!(GET "/v1/users/{id}/consents/current", backend(Users, Read), profiles::current_consents,
        errors: [NotFound, ValidationFailed, DeletionInProgress]),
    route!(POST "/v1/client/password_resets", Client, recovery::request_reset,
        errors: [ValidationFailed, InvalidEmail, DisposableEmail, TooManyAttempts, QuotaExceeded]),
    route!(POST "/v1/client/password_resets/confirm", Client, recovery::confirm_reset,
        errors: [CodeInvalid, CodeExpired, TooManyAttempts, WeakPassword, ValidationFailed,
            MfaRequired, RegionUnavailable]),
    route!(DELETE "/v1/client/password", Client, recovery::remove_password, session: true,
        errors: [StepUpRequired, InvalidCredentials, CodeInvalid, CodeAlreadyUsed, ValidationFailed,
            FactorLocked, Conflict]),
    route!(POST "/v1/client/email_changes/confirm", Client, recovery::confirm_email_change,
        errors: [CodeInvalid, CodeExpired, TooManyAttempts, Conflict, NotFound]),
    route!(GET "/v1/client/devices", Client, recovery::my_devices, session: true,
        errors: [NotFound, ValidationFailed]),
    // deletion: organizations, memberships and user deletion
    route!(POST "/v1/organizations", backend(Organizations, Write), organizations::create,
        errors: [ValidationFailed]),
    route!(GET "/v1/organizations", backend(Organizations, Read), organizations::list,
        errors: [ValidationFailed, NotFound]),
    route!(GET "/v1/organizations/{id}", backend(Organizations, Read), organizations::get,
        errors: [NotFound]),
    route!(PATCH "/v1/organizations/{id}", backend(Organizations, Write), organizations::update,
        errors: [NotFound, ValidationFailed]),
    route!(DELETE "/v1/organizations/{id}", backend(Organizations, Delete), organizations::delete,
        errors: [NotFound]),
    route!(POST "/v1/organizations/{id}/memberships", backend(Organizations, Write),
        organizations::add_member, errors: [NotFound, ValidationFailed, Conflict, DeletionInProgress]),
    route!(GET "/v1/organizations/{id}/memberships", backend(Organizations, Read),
        organizations::list_members, errors: [NotFound, ValidationFailed]),
    route!(PATCH "/v1/organizations/{id}/memberships/{user_id}", backend(Organizations, Write),
        organizations::update_member, errors: [NotFound, ValidationFailed]),
    route!(DELETE "/v1/organizations/{id}/memberships/{user_id}", backend(Organizations, Write),
        organizations::remove_member, errors: [NotFound]),
    route!(GET "/v1/users/{id}/organizations", backend(Organizations, Read),
        organizations::list_for_user, errors: [NotFound, ValidationFailed, DeletionInProgress]),
    route!(DELETE "/v1/users/{id}", backend(Users, Delete), deletions::delete_user,
        errors: [NotFound, UserBeingMoved]),
    route!(GET "/v1/deletions/{id}", backend(Users, Read), deletions::get, errors: [NotFound]),
    // Regions at scale: moving a user between regions (docs/REGIONS.md).
    route!(POST "/v1/users/{id}/move", backend(Users, Manage), moves::start,
        errors: [NotFound, ValidationFailed, ResidencyViolation, RegionUnavailable, UserBeingMoved,
            DeletionInProgress]),
    route!(GET "/v1/user_moves/{id}", backend(Users, Read), moves::get, errors: [NotFound]),
    // Webhooks and the audit log (docs/WEBHOOKS.md).
    route!(POST "/v1/webhook_endpoints", backend(Webhooks, Manage), webhooks::create,
        errors: [ValidationFailed, SsrfRefused, PlanLimitReached]),
    route!(GET "/v1/webhook_endpoints", backend(Webhooks, Read), webhooks::list,
        errors: [ValidationFailed]),
    route!(GET "/v1/webhook_endpoints/{id}", backend(Webhooks, Read), webhooks::get,
        errors: [NotFound]),
    route!(PATCH "/v1/webhook_endpoints/{id}", backend(Webhooks, Manage), webhooks::update,
        errors: [NotFound, ValidationFailed, SsrfRefused]),
    route!(DELETE "/v1/webhook_endpoints/{id}", backend(Webhooks, Manage), webhooks::delete,
        errors: [NotFound]),
    route!(POST "/v1/webhook_endpoints/{id}/rotate_secret", backend(Webhooks, Manage),
        webhooks::rotate_secret, errors: [NotFound, ValidationFailed]),
    route!(GET "/v1/webhook_endpoints/{id}/attempts", backend(Webhooks, Read), webhooks::attempts,
        errors: [NotFound, ValidationFailed]),
    route!(POST "/v1/webhook_endpoints/{id}/replay", backend(Webhooks, Manage), webhooks::replay,
        errors: [NotFound, ValidationFailed, Conflict]),
    route!(GET "/v1/webhook_messages", backend(Webhooks, Read), webhooks::messages,
        errors: [ValidationFailed]),
    route!(POST "/v1/webhook_messages/{id}/retry", backend(Webhooks, Manage), webhooks::retry,
        errors: [NotFound, Conflict]),
    route!(GET "/v1/audit_events", backend(Audit, Read), audit::list,
        errors: [ValidationFailed]),
];

/// The access class the table gives `method path`.
pub fn access_of(method: &Method, path: &str) -> Option<Access> {
    ROUTES
        .iter()
        .find(|route| route.method == method && route.path == path)
        .map(|route| route.access)
}

pub fn router(app: Arc<App>) -> Router {
    routes()
        .route("/openapi.json", axum::routing::get(crate::openapi::serve))
        .with_state(Arc::clone(&app))
        // For the idempotency layer, which runs before the handler's state.
        .layer(Extension(app))
}

/// The table mounted, each route carrying its access class for `authorize`.
fn routes() -> Router<Arc<App>> {
    ROUTES
        .iter()
        .fold(Router::new(), |router, route| {
            let mut handler = (route.handler)();
            if crate::idempotency::applies(&route.method, route.path) {
                handler = handler.layer(axum::middleware::from_fn(crate::idempotency::layer));
            }
            router.route(route.path, handler.layer(Extension(route.access)))
        })
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found() -> HttpError {
    HttpError(ApiError::not_found("route"))
}

async fn method_not_allowed() -> HttpError {
    HttpError(ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    ))
}

/// A JSON body, or the stable error for why it is not one: too large is
/// `payload_too_large`, anything else malformed is `invalid_request`.
pub fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match parsed {
        Ok(Json(value)) => Ok(value),
        Err(rejection) if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE => Err(
            ApiError::new(ErrorCode::PayloadTooLarge, "the request body is too large"),
        ),
        Err(rejection) => Err(ApiError::invalid_request(rejection.body_text())),
    }
}

pub fn query<T>(parsed: Result<axum::extract::Query<T>, QueryRejection>) -> Result<T, ApiError> {
    parsed
        .map(|q| q.0)
        .map_err(|e| ApiError::invalid_request(e.body_text()))
}

pub type Reply<T> = Result<T, HttpError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waf::RouteClass;
    use std::collections::HashSet;

    #[test]
    fn the_table_mounts_and_names_each_route_once() {
        let mut seen = HashSet::new();
        for route in ROUTES {
            assert!(
                seen.insert((route.method.clone(), route.path)),
                "{} {} appears twice",
                route.method,
                route.path
            );
        }
        // Mounting panics on overlapping routes or bad paths.
        let _ = routes();
    }

    /// The WAF and CORS classify a request by its path before routing; that
    /// must agree with the access class the table enforces, or a browser
    /// route would get backend limits (or a backend route CORS headers).
    #[test]
    fn the_path_class_agrees_with_the_access_class() {
        for route in ROUTES {
            let expected = match route.access {
                Access::Backend(_) => RouteClass::Backend,
                Access::Client => RouteClass::Client,
                Access::Verification => RouteClass::Verification,
            };
            assert_eq!(
                RouteClass::of_path(route.path),
                expected,
                "{} {}",
                route.method,
                route.path
            );
        }
    }
}
