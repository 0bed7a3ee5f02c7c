//! Who may do what on the bus: the one permission table.
//!
//! Every service connects to NATS as its own identity. For each identity the
//! table below lists the subjects it serves, the operations it calls, the
//! broadcasts it sends and hears, the events it publishes and the JetStream
//! streams and consumers it uses. Two things are derived from it:
//!
//! - the NATS server's per-user publish/subscribe permissions
//!   ([`permissions`], rendered by [`crate::nats_config`]): the server is what
//!   actually stops an identity from reading or sending anything else;
//! - the serving loop's caller check ([`may_call`]): a handler refuses a
//!   request whose caller has no row for that operation, so drift between a
//!   deployed server config and this table cannot widen anyone's rights.
//!
//! The table was derived by reading every `bus.send`, `send_to`,
//! `serve`, broadcast and JetStream use in the code; each operation
//! it names must be one declared by a request type
//! (`idm_core::proto::Operation`), which a test checks. A new call,
//! broadcast, event type or stream use needs its row here, or the bus refuses
//! it (the client checks calls and events before sending, so the omission
//! shows up at once as `caller_not_allowed`, not as a time-out).

use idm_core::proto::{
    account, auth, deletion, event, moves, organization, session, store, user, webhook,
};
use idm_core::Region;

/// A service's identity on the bus: one NATS user (one nkey) each, one per
/// region for the stores so a store cannot listen to another region's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    EdgeGuard,
    Account,
    Auth,
    Session,
    User,
    UserStore(Region),
    DeletionWorker,
    Webhook,
    /// Operator tooling and the test kit: reads and cleans up streams, calls
    /// no service.
    Admin,
}

impl Identity {
    /// Every identity of a deployment (a store identity per region).
    pub fn all() -> Vec<Identity> {
        let mut all = vec![
            Identity::EdgeGuard,
            Identity::Account,
            Identity::Auth,
            Identity::Session,
            Identity::User,
        ];
        all.extend(Region::ALL.into_iter().map(Identity::UserStore));
        all.extend([Identity::DeletionWorker, Identity::Webhook, Identity::Admin]);
        all
    }

    /// The name used in headers, inboxes and credential files.
    pub fn name(self) -> String {
        match self {
            Identity::UserStore(region) => format!("user-store-{region}"),
            other => other.fixed_name().to_owned(),
        }
    }

    fn fixed_name(self) -> &'static str {
        match self {
            Identity::EdgeGuard => "edge-guard",
            Identity::Account => "account",
            Identity::Auth => "auth",
            Identity::Session => "session",
            Identity::User => "user",
            Identity::UserStore(_) => "user-store",
            Identity::DeletionWorker => "deletion-worker",
            Identity::Webhook => "webhook",
            Identity::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Identity> {
        Identity::all().into_iter().find(|i| i.name() == raw)
    }

    /// The prefix of this identity's reply subjects: `_INBOX_<prefix>_<name>`.
    /// Only this identity may subscribe below it, so nobody else can read
    /// the answers it is sent. (Subject prefixes and names hold no `.`, and
    /// names no `_`, so the prefix is one subject token and unambiguous.)
    pub fn inbox_prefix(self, subject_prefix: &str) -> String {
        format!("_INBOX_{subject_prefix}_{}", self.name())
    }

    fn rights(self) -> &'static Rights {
        match self {
            Identity::EdgeGuard => &EDGE_GUARD,
            Identity::Account => &ACCOUNT,
            Identity::Auth => &AUTH,
            Identity::Session => &SESSION,
            Identity::User => &USER,
            Identity::UserStore(_) => &USER_STORE,
            Identity::DeletionWorker => &DELETION_WORKER,
            Identity::Webhook => &WEBHOOK,
            Identity::Admin => &ADMIN,
        }
    }

    /// What this identity answers, if anything.
    pub fn serves(self) -> Option<Served> {
        match (self, self.rights().serves) {
            (Identity::UserStore(region), Some(_)) => Some(Served::Store(region)),
            (_, Some(service)) => Some(Served::Service(service)),
            (_, None) => None,
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

pub use idm_core::proto::Target;

/// The target of the service called `name` in subjects, if it answers calls.
pub fn service_target(name: &str) -> Option<Target> {
    SERVICES
        .iter()
        .find(|s| **s == name)
        .map(|s| Target::Service(s))
}

/// What one serving loop answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    Service(&'static str),
    Store(Region),
}

impl Served {
    pub fn target(self) -> Target {
        match self {
            Served::Service(name) => Target::Service(name),
            Served::Store(_) => Target::Store,
        }
    }

    /// `<prefix>.<service>.v1` or `<prefix>.store.<region>.v1`.
    pub fn subject_base(self, prefix: &str) -> String {
        match self {
            Served::Service(name) => format!("{prefix}.{name}.v1"),
            Served::Store(region) => format!("{prefix}.store.{region}.v1"),
        }
    }

    /// The queue group replicas share.
    pub fn queue_group(self) -> String {
        match self {
            Served::Service(name) => name.to_owned(),
            Served::Store(region) => format!("store-{region}"),
        }
    }
}

/// The JetStream streams of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `<prefix>.events.<issuer>.<type>`, kept for a retention period.
    Events,
    /// `<prefix>.mail.outgoing`, a work queue.
    Mail,
    /// `<prefix>.deletions.jobs`, the deletion work queue: one message per
    /// job, kept unacknowledged while the job runs (deletion-worker).
    Deletions,
}

impl Stream {
    /// `<PREFIX>_EVENTS` etc. (stream names cannot hold dots).
    pub fn name(self, prefix: &str) -> String {
        let suffix = match self {
            Stream::Events => "EVENTS",
            Stream::Mail => "MAIL",
            Stream::Deletions => "DELETIONS",
        };
        format!(
            "{}_{suffix}",
            prefix.to_ascii_uppercase().replace(['-', '.'], "_")
        )
    }
}

/// One identity's use of one stream.
#[derive(Debug)]
struct StreamUse {
    stream: Stream,
    /// Looks the stream up and creates it if it is missing (`get_or_create`).
    ensure: bool,
    /// Subjects (below the prefix) it publishes into the stream, besides
    /// events (which are listed per type in `Rights::events`).
    publish: &'static [&'static str],
    /// Durable consumers it creates and reads (and acknowledges).
    consumers: &'static [&'static str],
    /// Reads stream info and single messages (operator tooling, tests).
    read: bool,
    /// Deletes the stream (clean-up of a test deployment).
    delete: bool,
}

const fn ensures(stream: Stream) -> StreamUse {
    StreamUse {
        stream,
        ensure: true,
        publish: &[],
        consumers: &[],
        read: false,
        delete: false,
    }
}

/// A group of operations one identity calls on one target.
#[derive(Debug)]
struct Calls {
    target: Target,
    ops: &'static [&'static str],
}

#[derive(Debug)]
struct Rights {
    /// The service answered (`<prefix>.<service>.v1.*`), or for the stores
    /// `"store"` (each store serves its own region).
    serves: Option<&'static str>,
    calls: &'static [Calls],
    /// Broadcast topics sent (`<prefix>.<topic>.<issuer>`).
    broadcasts: &'static [&'static str],
    /// Broadcast topics heard (every replica hears every message).
    hears: &'static [&'static str],
    /// Event types published to the EVENTS stream.
    events: &'static [&'static str],
    streams: &'static [StreamUse],
}

/// Services that answer calls, as they appear in subjects.
const SERVICES: [&str; 6] = ["account", "auth", "session", "user", "deletion", "webhook"];

const CONFIG_CHANGED: &str = "config.changed";
const SESSION_REVOKED: &str = "session.revoked";
const IP_BANNED: &str = "ip.banned";
const IP_UNBANNED: &str = "ip.unbanned";
/// A store's "this user changed": drops the user from every edge's `/me` cache.
const USER_CHANGED: &str = store::USER_CHANGED_TOPIC;

static EDGE_GUARD: Rights = Rights {
    serves: None,
    calls: &[
        // `GET /v1/client/me`: the session token names the user's region, so
        // the edge asks that store directly (one hop, one statement) instead
        // of the user service and its directory (issue 10, docs/PERFORMANCE.md).
        Calls {
            target: Target::Store,
            ops: &[
                store::GET_SESSION_USER,
                // Refresh in one bus hop (issue 10, docs/SESSIONS.md): the
                // edge rotates a refresh token whose hash it is given (a
                // store cannot be asked to list tokens) and signs with the
                // ring it already holds; it ends a session that predates an
                // emergency key revocation, as `session.revoke` could.
                store::REFRESH_SESSION,
                store::REVOKE_SESSION,
            ],
        },
        Calls {
            target: Target::Service("account"),
            ops: &[
                account::RESOLVE_KEY,
                account::GET_ISSUER,
                account::UPDATE_ISSUER,
                account::CREATE_ISSUER,
                account::CREATE_API_KEY,
                account::LIST_API_KEYS,
                account::REVOKE_API_KEY,
                account::RESOLVE_HOST,
                account::ADD_DOMAIN,
                account::LIST_DOMAINS,
                account::REMOVE_DOMAIN,
                account::VERIFY_DOMAIN,
            ],
        },
        Calls {
            target: Target::Service("auth"),
            ops: &[
                auth::SIGN_UP,
                auth::SIGN_IN,
                auth::SEND_MAGIC_LINK,
                auth::VERIFY_MAGIC_LINK,
                auth::SEND_EMAIL_CODE,
                auth::VERIFY_EMAIL_CODE,
                auth::ENROLL_TOTP,
                auth::CONFIRM_TOTP,
                auth::VERIFY_MFA,
                auth::SEND_VERIFICATION,
                auth::CHECK_VERIFICATION,
                auth::DISABLE_TOTP,
                auth::REGENERATE_BACKUP_CODES,
                auth::CHANGE_PASSWORD,
                auth::UNLOCK_FACTORS,
                // Users (issue 11).
                auth::SEND_PASSWORD_RESET,
                auth::CONFIRM_PASSWORD_RESET,
                auth::REMOVE_PASSWORD,
                auth::CONFIRM_EMAIL_CHANGE,
            ],
        },
        Calls {
            target: Target::Service("session"),
            // Key material (`key_ring`) goes to the edge alone.
            ops: &[
                session::REFRESH,
                session::REVOKE,
                session::REVOKE_ALL,
                session::LIST,
                session::KEY_RING,
                session::ROTATE_KEY,
                session::REVOKE_KEYS,
                // The authoritative revocations an edge rebuilds its set from.
                session::REVOKED_SESSIONS,
                // Users (issue 11): revoke-by-device.
                session::REVOKE_DEVICE,
                // A reused refresh token found by the edge: broadcast and event.
                session::REPORT_REUSE,
            ],
        },
        Calls {
            target: Target::Service("user"),
            ops: &[
                user::CREATE_USER,
                user::GET_USER,
                user::FIND_BY_EMAIL,
                user::CREATE_PERSONAL_TOKEN,
                user::LIST_PERSONAL_TOKENS,
                user::REVOKE_PERSONAL_TOKEN,
                user::VERIFY_PERSONAL_TOKEN,
                user::RESIDENCY,
                // Users (issue 11).
                user::UPDATE_USER,
                user::LIST_USERS,
                user::LIST_DEVICES,
                user::ADD_CONSENT,
                user::LIST_CONSENTS,
                // deletion: organizations and memberships
                organization::CREATE_ORGANIZATION,
                organization::GET_ORGANIZATION,
                organization::LIST_ORGANIZATIONS,
                organization::UPDATE_ORGANIZATION,
                organization::DELETE_ORGANIZATION,
                organization::ADD_MEMBERSHIP,
                organization::LIST_MEMBERSHIPS,
                organization::UPDATE_MEMBERSHIP,
                organization::REMOVE_MEMBERSHIP,
                organization::LIST_USER_ORGANIZATIONS,
            ],
        },
        // deletion: user deletion jobs
        Calls {
            target: Target::Service("deletion"),
            ops: &[deletion::START_DELETION, deletion::GET_DELETION],
        },
        // Regions at scale: moving a user (a job of the deletion-worker).
        Calls {
            target: Target::Service("deletion"),
            ops: &[moves::START_MOVE, moves::GET_MOVE],
        },
        Calls {
            target: Target::Service("webhook"),
            ops: &[
                webhook::CREATE_ENDPOINT,
                webhook::LIST_ENDPOINTS,
                webhook::GET_ENDPOINT,
                webhook::UPDATE_ENDPOINT,
                webhook::DELETE_ENDPOINT,
                webhook::ROTATE_SECRET,
                webhook::LIST_MESSAGES,
                webhook::RETRY_MESSAGE,
                webhook::LIST_ATTEMPTS,
                webhook::REPLAY,
            ],
        },
        Calls {
            target: Target::Service("account"),
            ops: &[account::LIST_AUDIT_EVENTS],
        },
    ],
    broadcasts: &[IP_BANNED, IP_UNBANNED],
    hears: &[
        CONFIG_CHANGED,
        SESSION_REVOKED,
        IP_BANNED,
        IP_UNBANNED,
        USER_CHANGED,
    ],
    events: &[event::IP_BANNED, event::IP_BAN_LIFTED],
    streams: &[ensures(Stream::Events)],
};

static ACCOUNT: Rights = Rights {
    serves: Some("account"),
    calls: &[
        Calls {
            target: Target::Store,
            ops: &[store::PROVISION_ISSUER],
        },
        Calls {
            target: Target::Service("session"),
            ops: &[session::INIT_ISSUER],
        },
        Calls {
            target: Target::Service("user"),
            ops: &[user::INIT_ISSUER],
        },
    ],
    broadcasts: &[CONFIG_CHANGED],
    hears: &[],
    events: &[
        event::API_KEY_CREATED,
        event::API_KEY_REVOKED,
        event::ISSUER_UPDATED,
        event::ACCOUNT_CREATED,
        event::ACCOUNT_PLAN_CHANGED,
        event::ISSUER_PROVISIONED,
    ],
    // The audit log: a durable consumer on EVENTS (docs/WEBHOOKS.md).
    streams: &[StreamUse {
        stream: Stream::Events,
        ensure: true,
        publish: &[],
        consumers: &["audit"],
        read: false,
        delete: false,
    }],
};

static AUTH: Rights = Rights {
    serves: Some("auth"),
    calls: &[
        Calls {
            target: Target::Service("session"),
            // List, revoke and revoke_all: a password change ends the other
            // sessions, an address's first proof ends every session
            // (pre-hijacking); decoy_session answers a hidden sign-up.
            ops: &[
                session::CREATE_SESSION,
                session::SIGN_VERIFICATION,
                session::LIST,
                session::REVOKE,
                session::REVOKE_ALL,
                session::DECOY_SESSION,
            ],
        },
        Calls {
            target: Target::Service("user"),
            ops: &[
                user::CREATE_USER,
                user::LOCATE,
                user::GET_USER,
                user::PLACEMENT,
                // Users (issue 11): a proven new address is applied.
                user::APPLY_EMAIL_CHANGE,
            ],
        },
        Calls {
            target: Target::Store,
            // Password checks and second factors are auth's alone.
            ops: &[
                store::VERIFY_PASSWORD,
                store::MARK_EMAIL_VERIFIED,
                store::GET_TOTP,
                store::SET_PENDING_TOTP,
                store::ENABLE_TOTP,
                store::USE_TOTP_STEP,
                store::USE_BACKUP_CODE,
                store::CREDENTIALS,
                store::DISABLE_TOTP,
                store::REPLACE_BACKUP_CODES,
                store::SET_PASSWORD,
                store::LIST_SEALED_TOTP,
                store::RESEAL_TOTP,
                // Users (issue 11).
                store::REMOVE_PASSWORD,
            ],
        },
    ],
    broadcasts: &[],
    hears: &[],
    events: &[
        event::MFA_ENABLED,
        event::MFA_DISABLED,
        event::MFA_BACKUP_CODES_REGENERATED,
        event::PASSWORD_CHANGED,
        event::FACTOR_LOCKED,
        event::FACTOR_UNLOCKED,
    ],
    streams: &[
        ensures(Stream::Events),
        StreamUse {
            stream: Stream::Mail,
            ensure: true,
            publish: &["mail.outgoing"],
            consumers: &["courier"],
            read: false,
            delete: false,
        },
    ],
};

static SESSION: Rights = Rights {
    serves: Some("session"),
    calls: &[
        Calls {
            target: Target::Store,
            ops: &[
                store::CREATE_SESSION,
                store::REFRESH_SESSION,
                store::REVOKE_SESSION,
                store::REVOKE_USER_SESSIONS,
                store::LIST_SESSIONS,
                store::LIST_REVOKED_SESSIONS,
                // Users (issue 11): revoke-by-device.
                store::REVOKE_DEVICE,
            ],
        },
        Calls {
            target: Target::Service("user"),
            ops: &[user::GET_USER],
        },
    ],
    broadcasts: &[CONFIG_CHANGED, SESSION_REVOKED],
    hears: &[CONFIG_CHANGED],
    events: &[
        event::SESSION_CREATED,
        event::SESSION_REVOKED,
        event::SESSION_COMPROMISED,
        event::SESSION_KEYS_REVOKED,
    ],
    streams: &[ensures(Stream::Events)],
};

static USER: Rights = Rights {
    serves: Some("user"),
    calls: &[
        Calls {
            target: Target::Store,
            ops: &[
                // Which jurisdiction and database a store announces (routing
                // checks, `/readyz`, residency evidence).
                store::INFO,
                store::CREATE_USER,
                store::GET_USER,
                store::CREATE_PERSONAL_TOKEN,
                store::LIST_PERSONAL_TOKENS,
                store::REVOKE_PERSONAL_TOKEN,
                store::VERIFY_PERSONAL_TOKEN,
                // Users (issue 11).
                store::UPDATE_PROFILE,
                store::GET_USERS,
                store::CHANGE_EMAIL,
                store::LIST_DEVICES,
                store::ADD_CONSENT,
                store::LIST_CONSENTS,
            ],
        },
        // Users (issue 11): an address change mails a code to the new address.
        Calls {
            target: Target::Service("auth"),
            ops: &[auth::START_EMAIL_CHANGE],
        },
    ],
    broadcasts: &[],
    hears: &[],
    events: &[
        event::USER_CREATED,
        event::USER_UPDATED,
        event::EMAIL_CHANGED,
        event::ORGANIZATION_CREATED,
        event::ORGANIZATION_UPDATED,
        event::ORGANIZATION_DELETED,
        event::MEMBERSHIP_CREATED,
        event::MEMBERSHIP_UPDATED,
        event::MEMBERSHIP_DELETED,
    ],
    streams: &[ensures(Stream::Events)],
};

static USER_STORE: Rights = Rights {
    serves: Some("store"),
    // Moving a user: the target store pulls the user's rows straight from
    // the source store (the rows never pass through a global service); the
    // source refuses to send an EU user's rows to a non-EU region.
    calls: &[Calls {
        target: Target::Store,
        ops: &[moves::store::EXPORT_USER],
    }],
    // After a change to what `/me` shows, a purge or a move (issue 10, the
    // edge's `/me` cache): ids only.
    broadcasts: &[USER_CHANGED],
    hears: &[],
    events: &[],
    streams: &[],
};

/// deletion: the deletion-worker answers the edge's deletion calls and runs
/// each job's steps: sessions through the session service (so the
/// revocation broadcast reaches every edge), personal tokens and regional
/// data in the user's store, memberships and the directory entry in the
/// user service.
static DELETION_WORKER: Rights = Rights {
    serves: Some("deletion"),
    calls: &[
        Calls {
            target: Target::Service("session"),
            ops: &[session::REVOKE_ALL],
        },
        Calls {
            target: Target::Service("user"),
            ops: &[
                deletion::directory::BEGIN_DELETION,
                deletion::directory::REMOVE_USER_MEMBERSHIPS,
                deletion::directory::PURGE_DIRECTORY_ENTRY,
                moves::directory::BEGIN_MOVE,
                moves::directory::SWITCH_REGION,
            ],
        },
        Calls {
            target: Target::Service("auth"),
            ops: &[deletion::auth::FORGET_USER],
        },
        Calls {
            target: Target::Service("account"),
            ops: &[deletion::account::FORGET_AUDIT_NETWORKS],
        },
        Calls {
            target: Target::Store,
            ops: &[
                deletion::store::REVOKE_USER_PERSONAL_TOKENS,
                deletion::store::PURGE_USER,
                moves::store::COPY_USER_FROM,
                moves::store::DIGEST_USER,
            ],
        },
    ],
    broadcasts: &[],
    hears: &[],
    events: &[
        event::USER_DELETED,
        event::USER_DELETION_STALLED,
        event::USER_DELETION_STEP_COMPLETED,
        event::USER_MOVED,
    ],
    streams: &[
        ensures(Stream::Events),
        StreamUse {
            stream: Stream::Deletions,
            ensure: true,
            publish: &["deletions.jobs"],
            consumers: &["cascade"],
            read: false,
            delete: false,
        },
    ],
};

/// The webhook service answers the edge's endpoint routes, reads `EVENTS`
/// through its durable consumer, and tells tenants when it disabled one of
/// their endpoints.
static WEBHOOK: Rights = Rights {
    serves: Some("webhook"),
    calls: &[],
    broadcasts: &[],
    hears: &[],
    events: &[
        event::WEBHOOK_ENDPOINT_DISABLED,
        event::WEBHOOK_ENDPOINT_CREATED,
        event::WEBHOOK_ENDPOINT_UPDATED,
        event::WEBHOOK_ENDPOINT_DELETED,
        event::WEBHOOK_ENDPOINT_SECRET_ROTATED,
    ],
    streams: &[StreamUse {
        stream: Stream::Events,
        ensure: true,
        publish: &[],
        consumers: &["webhook"],
        read: false,
        delete: false,
    }],
};

static ADMIN: Rights = Rights {
    serves: None,
    calls: &[],
    broadcasts: &[],
    hears: &[],
    events: &[],
    streams: &[
        StreamUse {
            stream: Stream::Events,
            ensure: false,
            publish: &[],
            consumers: &[],
            read: true,
            delete: true,
        },
        StreamUse {
            stream: Stream::Mail,
            ensure: false,
            publish: &[],
            consumers: &[],
            read: true,
            delete: true,
        },
        StreamUse {
            stream: Stream::Deletions,
            ensure: false,
            publish: &[],
            consumers: &[],
            read: true,
            delete: true,
        },
    ],
};

/// May `caller` call `op` on `target`? The serving loop asks this for every
/// request, and the client before sending one.
pub fn may_call(caller: Identity, target: Target, op: &str) -> bool {
    caller
        .rights()
        .calls
        .iter()
        .any(|c| c.target == target && c.ops.contains(&op))
}

/// May `identity` publish events of `event_type`?
pub fn may_publish_event(identity: Identity, event_type: &str) -> bool {
    identity.rights().events.contains(&event_type)
}

/// Every `(target, op)` the identity may call, for tests and tooling.
pub fn calls_of(identity: Identity) -> Vec<(Target, &'static str)> {
    identity
        .rights()
        .calls
        .iter()
        .flat_map(|c| c.ops.iter().map(move |op| (c.target, *op)))
        .collect()
}

/// Every `(target, op)` anyone may call: the universe the denial tests walk.
pub fn all_calls() -> Vec<(Target, &'static str)> {
    let mut all: Vec<(Target, &'static str)> = Vec::new();
    for identity in Identity::all() {
        for call in calls_of(identity) {
            if !all.contains(&call) {
                all.push(call);
            }
        }
    }
    all
}

/// One identity's NATS permissions for a deployment with `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// Responders may publish one reply to the reply subject of each request
    /// they received (and nothing else in anyone's inbox).
    pub allow_responses: bool,
}

/// The server-side permissions of `identity`, derived from the table.
pub fn permissions(identity: Identity, prefix: &str) -> Permissions {
    let rights = identity.rights();
    let mut publish = Vec::new();
    let mut subscribe = vec![format!("{}.>", identity.inbox_prefix(prefix))];
    if let Some(served) = identity.serves() {
        subscribe.push(format!("{}.*", served.subject_base(prefix)));
    }
    if identity.serves().is_some() || !rights.hears.is_empty() {
        // Its own inbox, which only it reads: a serving loop or a broadcast
        // listener confirms its subscription with a message to itself
        // (`Bus::confirm_subscriptions`).
        publish.push(format!("{}.>", identity.inbox_prefix(prefix)));
    }
    for calls in rights.calls {
        for op in calls.ops {
            publish.push(match calls.target {
                Target::Service(service) => format!("{prefix}.{service}.v1.{op}"),
                Target::Store => format!("{prefix}.store.*.v1.{op}"),
            });
        }
    }
    for topic in rights.broadcasts {
        publish.push(format!("{prefix}.{topic}.*"));
    }
    for topic in rights.hears {
        subscribe.push(format!("{prefix}.{topic}.*"));
    }
    for event_type in rights.events {
        publish.push(format!("{prefix}.events.*.{event_type}"));
    }
    for used in rights.streams {
        let name = used.stream.name(prefix);
        let api = "$JS.API";
        if used.ensure || used.read {
            publish.push(format!("{api}.STREAM.INFO.{name}"));
        }
        if used.ensure {
            publish.push(format!("{api}.STREAM.CREATE.{name}"));
        }
        if used.read {
            publish.push(format!("{api}.STREAM.MSG.GET.{name}"));
        }
        if used.delete {
            publish.push(format!("{api}.STREAM.DELETE.{name}"));
        }
        for subject in used.publish {
            publish.push(format!("{prefix}.{subject}"));
        }
        for consumer in used.consumers {
            publish.push(format!("{api}.CONSUMER.INFO.{name}.{consumer}"));
            publish.push(format!("{api}.CONSUMER.CREATE.{name}.{consumer}"));
            publish.push(format!("{api}.CONSUMER.MSG.NEXT.{name}.{consumer}"));
            publish.push(format!("$JS.ACK.{name}.{consumer}.>"));
        }
    }
    Permissions {
        publish,
        subscribe,
        allow_responses: identity.serves().is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let all = Identity::all();
        assert_eq!(all.len(), 5 + 8 + 3);
        for identity in &all {
            assert_eq!(Identity::parse(&identity.name()), Some(*identity));
            assert!(!identity.name().contains(['_', '.', '*', '>', ' ']));
        }
        let mut names: Vec<String> = all.iter().map(|i| i.name()).collect();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert_eq!(Identity::parse("root"), None);
    }

    #[test]
    fn key_material_and_password_checks_have_one_caller_each() {
        let key_ring: Vec<Identity> = Identity::all()
            .into_iter()
            .filter(|i| may_call(*i, Target::Service("session"), session::KEY_RING))
            .collect();
        assert_eq!(key_ring, vec![Identity::EdgeGuard]);
        let passwords: Vec<Identity> = Identity::all()
            .into_iter()
            .filter(|i| may_call(*i, Target::Store, store::VERIFY_PASSWORD))
            .collect();
        assert_eq!(passwords, vec![Identity::Auth]);
        assert!(!may_call(
            Identity::Admin,
            Target::Service("session"),
            session::KEY_RING
        ));
    }

    #[test]
    fn refresh_rotation_and_reuse_reports_have_their_callers_only() {
        let callers = |target: Target, op: &str| -> Vec<Identity> {
            Identity::all()
                .into_iter()
                .filter(|i| may_call(*i, target, op))
                .collect()
        };
        // The session service (edges of an earlier release) and the edge.
        assert_eq!(
            callers(Target::Store, store::REFRESH_SESSION),
            vec![Identity::EdgeGuard, Identity::Session]
        );
        assert_eq!(
            callers(Target::Service("session"), session::REPORT_REUSE),
            vec![Identity::EdgeGuard]
        );
        // Still nothing that reads or lists what a store keeps of sessions.
        for op in [
            store::LIST_SESSIONS,
            store::VERIFY_PASSWORD,
            moves::store::EXPORT_USER,
        ] {
            assert!(!may_call(Identity::EdgeGuard, Target::Store, op), "{op}");
        }
    }

    #[test]
    fn only_stores_announce_a_changed_user_and_only_edges_hear_it() {
        let subject = "idm.user.changed.*".to_owned();
        for identity in Identity::all() {
            let rules = permissions(identity, "idm");
            assert_eq!(
                rules.publish.contains(&subject),
                matches!(identity, Identity::UserStore(_)),
                "{identity}"
            );
            assert_eq!(
                rules.subscribe.contains(&subject),
                identity == Identity::EdgeGuard,
                "{identity}"
            );
        }
        // Nothing else under the user service's name opens to the stores.
        let store = permissions(Identity::UserStore(Region::Weur), "idm");
        assert!(!store.publish.iter().any(|s| s.starts_with("idm.user.v1")));
    }

    #[test]
    fn every_called_target_is_served_by_someone() {
        for (target, op) in all_calls() {
            let served = Identity::all()
                .into_iter()
                .filter_map(Identity::serves)
                .any(|s| s.target() == target);
            assert!(served, "{target}.{op} has no server");
        }
    }

    #[test]
    fn permissions_are_narrow() {
        let auth = permissions(Identity::Auth, "idm");
        assert!(auth.allow_responses);
        assert!(auth.subscribe.contains(&"_INBOX_idm_auth.>".to_owned()));
        assert!(auth.subscribe.contains(&"idm.auth.v1.*".to_owned()));
        assert!(auth
            .publish
            .contains(&"idm.store.*.v1.verify_password".to_owned()));
        assert!(auth
            .publish
            .contains(&"$JS.ACK.IDM_MAIL.courier.>".to_owned()));
        assert!(!auth.publish.iter().any(|s| s.contains("key_ring")));
        // Its own inbox only (to confirm its subscriptions), never another's.
        let inboxes: Vec<&String> = auth
            .publish
            .iter()
            .filter(|s| s.starts_with("_INBOX"))
            .collect();
        assert_eq!(inboxes, vec!["_INBOX_idm_auth.>"]);
        for rule in auth.publish.iter().chain(&auth.subscribe) {
            assert!(
                !matches!(rule.as_str(), ">" | "idm.>" | "$JS.API.>" | "_INBOX.>"),
                "{rule}"
            );
        }
        let store = permissions(Identity::UserStore(Region::Weur), "idm");
        assert_eq!(
            store.subscribe,
            vec!["_INBOX_idm_user-store-weur.>", "idm.store.weur.v1.*"]
        );
        // A store calls one operation: the source's export, when a user
        // moves; it may write to its own inbox (see `permissions`) and
        // announce a changed user to the edges.
        assert_eq!(
            store.publish,
            vec![
                "_INBOX_idm_user-store-weur.>",
                "idm.store.*.v1.export_user",
                "idm.user.changed.*"
            ]
        );
        let edge = permissions(Identity::EdgeGuard, "idm");
        assert!(!edge.allow_responses);
        assert!(edge.publish.contains(&"_INBOX_idm_edge-guard.>".to_owned()));
        assert!(!edge
            .publish
            .iter()
            .any(|s| s.starts_with("_INBOX") && s != "_INBOX_idm_edge-guard.>"));
        assert!(edge.publish.contains(&"idm.session.v1.key_ring".to_owned()));
        assert!(edge.subscribe.contains(&"idm.session.revoked.*".to_owned()));
        let admin = permissions(Identity::Admin, "idm");
        assert!(admin
            .publish
            .iter()
            .all(|s| s.starts_with("$JS.API.STREAM.")));
    }

    #[test]
    fn every_operation_in_the_table_is_a_declared_operation() {
        let declared = idm_core::proto::operation::all();
        for (target, op) in all_calls() {
            assert!(
                declared.iter().any(|d| d.target == target && d.name == op),
                "{target}.{op} is in the table but no request type declares it"
            );
        }
        for d in &declared {
            if let Target::Service(name) = d.target {
                assert_eq!(service_target(name), Some(d.target), "{name}");
            }
        }
    }

    #[test]
    fn the_table_publishes_exactly_the_declared_event_types() {
        let mut published: Vec<&str> = Identity::all()
            .into_iter()
            .flat_map(|i| i.rights().events.iter().copied())
            .collect();
        published.sort_unstable();
        published.dedup();
        let mut declared = event::DomainEvent::TYPES.to_vec();
        declared.sort_unstable();
        assert_eq!(published, declared);
    }

    #[test]
    fn stream_names_match_the_prefix_rule() {
        assert_eq!(Stream::Events.name("t1a-b"), "T1A_B_EVENTS");
        assert_eq!(Stream::Mail.name("idm"), "IDM_MAIL");
    }
}
