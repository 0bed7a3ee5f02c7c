//! Cross-service end-to-end and security suites, run against the real
//! PostgreSQL, Redis and NATS through edge-guard's HTTP API. Every test
//! starts its own isolated platform (see `idm-testkit`).

mod attacks;
mod bad_input;
mod bus_trust;
mod edge;
mod factor_kit;
mod fair_share;
mod foundation;
mod mfa;
mod passwordless;
mod personal_tokens;
mod plans;
mod platform;
mod revocation;
mod scopes;
mod second_factors;
mod session_keys;
mod sessions;
mod step_up;
mod takeover;
mod verifications;
