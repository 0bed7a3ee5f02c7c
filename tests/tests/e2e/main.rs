//! Cross-service end-to-end and security suites, run against the real
//! PostgreSQL, Redis and NATS through edge-guard's HTTP API. Tests that
//! isolation by issuer suffices for run on the binary's shared platform
//! (`Platform::shared()`, own accounts and addresses); the others start
//! their own (`Platform::start`, each with a `// Own platform: <why>`).

mod api_keys;
mod attacks;
mod bad_input;
mod ban_gate;
mod bus_trust;
mod edge;
mod factor_kit;
mod fair_share;
mod first_party;
mod foundation;
mod fuzz_findings;
mod idempotency;
mod js_client;
mod mail;
mod master_keys;
mod me_cache;
mod mfa;
mod openapi;
mod passwordless;
mod personal_tokens;
mod plans;
mod platform;
mod refresh;
mod regions;
mod revocation;
mod scopes;
mod second_factors;
mod session_keys;
mod sessions;
mod step_up;
mod store_schemas;
mod takeover;
mod verification_lane;
mod verifications;
// Users (issue 11).
mod consents;
mod devices;
mod password_reset;
mod profiles;
mod user_kit;
// deletion: organizations and user deletion
mod deletion;
mod organizations;
// Regions at scale: moving a user between regions.
mod user_moves;
// Webhooks, the audit log and the event catalogue (issue 12).
mod audit;
mod webhooks;
