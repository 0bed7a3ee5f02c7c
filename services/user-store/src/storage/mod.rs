//! Storage for one region: issuer-scoped handles over the region's database.

mod consents;
mod devices;
mod mfa;
// Regions at scale: a user's rows when the user moves region.
mod moves;
mod personal_tokens;
mod profiles;
mod purge;
pub mod schemas;
#[cfg(test)]
mod search_path_bench;
mod sessions;

pub use mfa::sealed_totp;
pub use sessions::revoked_sessions;

use crate::Error;
use idm_core::proto::store::{StoreInfo, StoredUser};
use idm_core::{ApiError, IssuerId, UserId};
use idm_db::sqlx;
use idm_db::{Client, DbError, GenericClient};

/// A connection bound to one issuer's schema. The only way to query users:
/// queries never name an issuer, so they cannot mix issuers. It holds one
/// of the issuer's fair share of connections, so an issuer flooding the
/// store waits (or is refused) within its own share while the others get
/// theirs.
pub struct IssuerStore {
    pub(super) client: Client,
    _share: idm_core::fair_share::Slot,
}

impl IssuerStore {
    pub async fn open(state: &crate::State, issuer: &IssuerId) -> Result<Self, Error> {
        // A store configured with another jurisdiction than its region's
        // serves no data (its callers refuse it too; `/readyz` says why).
        if state.jurisdiction != state.region.jurisdiction() {
            return Err(ApiError::new(
                idm_core::ErrorCode::ResidencyViolation,
                "this store announces the wrong jurisdiction for its region and serves no data",
            )
            .into());
        }
        // Waiting ends with the caller's deadline: nobody would read the answer.
        let share = idm_bus::within_deadline(state.connections.enter(issuer.as_str()))
            .await?
            .map_err(|refused| {
                metrics::counter!(idm_core::metric::STORE_SHED.name, "resource" => "db")
                    .increment(1);
                crate::error::overloaded(
                    "the store is busy with this application's requests; retry shortly",
                    refused.retry_after,
                )
            })?;
        // The connection comes with this issuer's schema as its whole
        // `search_path`, set in the statement that checks the schema exists
        // and before anything else runs on it, so no earlier checkout's
        // path survives into this handle; plain checkouts from the same
        // pool start from `RESET ALL` (`Db::connect_session_resetting`).
        // Set for the session rather than per transaction so a handle's
        // statements need no BEGIN/COMMIT round trips of their own; see
        // docs/DESIGN-NOTES.md ("search_path").
        let schema = issuer.store_schema();
        let Some(client) = state.db.get_in_schema(&schema).await? else {
            return Err(Error::NoSchema);
        };
        schemas::check_version(&mut *client.conn().await, &schema, &state.schemas).await?;
        Ok(Self {
            client,
            _share: share,
        })
    }

    /// [`IssuerStore::open`], creating the issuer's schema first when this
    /// region has none yet, or finishing it when it is behind (a concurrent
    /// first write still creating it, or a build newer than the schema):
    /// for the writes that place data here (a new user). The migration
    /// runs under the schema's lock, so concurrent first writes wait for
    /// one another. Reads never create a schema: no schema means no data.
    pub async fn open_provisioning(state: &crate::State, issuer: &IssuerId) -> Result<Self, Error> {
        match Self::open(state, issuer).await {
            Err(Error::NoSchema | Error::SchemaBehind { .. }) => {
                tracing::info!(%issuer, region = %state.region, "provisioning this issuer's schema before its first write here");
                schemas::provision(&state.db, issuer, &state.schemas).await?;
                Self::open(state, issuer).await
            }
            other => other,
        }
    }

    pub async fn insert_user(
        &self,
        id: &UserId,
        email: &idm_core::Email,
        name: Option<&str>,
        metadata: &serde_json::Value,
        password_hash: Option<&str>,
    ) -> Result<UserRow, DbError> {
        Ok(sqlx::query_as!(
            UserRow,
            "INSERT INTO users (id, email, email_canonical, name, metadata, password_hash)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 RETURNING id, email, email_verified, name, metadata, mfa_enabled, created_at",
            id.as_str(),
            email.as_str(),
            email.canonical(),
            name,
            metadata,
            password_hash,
        )
        .fetch_one(&mut *self.client.conn().await)
        .await?)
    }

    pub async fn user(&self, id: &UserId) -> Result<Option<UserRow>, DbError> {
        Ok(sqlx::query_as!(
            UserRow,
            "SELECT id, email, email_verified, name, metadata, mfa_enabled, created_at FROM users WHERE id = $1",
            id.as_str(),
        )
        .fetch_optional(&mut *self.client.conn().await)
        .await?)
    }

    /// The user and the state of one of their sessions, in one statement
    /// (`None`: no such user in this issuer's schema). The session is
    /// matched on its id *and* its user, so a session of another user (or
    /// of nobody) is `Unknown`, never someone else's profile.
    pub async fn session_user(
        &self,
        id: &UserId,
        session: &idm_core::SessionId,
    ) -> Result<Option<SessionUser>, DbError> {
        let row = sqlx::query!(
            r#"SELECT u.id AS "id!", u.email AS "email!", u.email_verified AS "email_verified!",
                      u.name AS "name?", u.metadata AS "metadata!", u.mfa_enabled AS "mfa_enabled!",
                      u.created_at AS "created_at!",
                      s.id IS NOT NULL AS "known!",
                      s.revoked_at IS NOT NULL AS "revoked!",
                      s.revoke_reason IS NOT DISTINCT FROM 'compromised' AS "compromised!",
                      COALESCE(s.expires_at <= now(), false) AS "ended!"
                 FROM users u LEFT JOIN sessions s ON s.id = $2 AND s.user_id = u.id
                WHERE u.id = $1"#,
            id.as_str(),
            session.as_str(),
        )
        .fetch_optional(&mut *self.client.conn().await)
        .await?;
        Ok(row.map(|r| SessionUser {
            session: if r.revoked {
                SessionState::Revoked {
                    compromised: r.compromised,
                }
            } else if !r.known || r.ended {
                SessionState::Unknown
            } else {
                SessionState::Live
            },
            user: UserRow {
                id: r.id,
                email: r.email,
                email_verified: r.email_verified,
                name: r.name,
                metadata: r.metadata,
                mfa_enabled: r.mfa_enabled,
                created_at: r.created_at,
            },
        }))
    }

    pub async fn password_hash(&self, id: &UserId) -> Result<Option<String>, DbError> {
        let hash =
            sqlx::query_scalar!("SELECT password_hash FROM users WHERE id = $1", id.as_str())
                .fetch_optional(&mut *self.client.conn().await)
                .await?;
        Ok(hash.flatten())
    }

    pub async fn set_password_hash(&self, id: &UserId, hash: &str) -> Result<(), DbError> {
        sqlx::query!(
            "UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1",
            id.as_str(),
            hash,
        )
        .execute(&mut *self.client.conn().await)
        .await?;
        Ok(())
    }
}

pub(super) fn corrupt() -> DbError {
    DbError::BadIdentifier("stored id".into())
}

/// A user's columns as stored (checked against the schema at build time).
pub struct UserRow {
    id: String,
    email: String,
    email_verified: bool,
    name: Option<String>,
    metadata: serde_json::Value,
    mfa_enabled: bool,
    created_at: idm_core::Timestamp,
}

/// Where a session stands, as its store sees it.
pub enum SessionState {
    Live,
    Revoked {
        compromised: bool,
    },
    /// No such session of this user, or past its absolute end.
    Unknown,
}

/// A user and the state of the session that asks for them.
pub struct SessionUser {
    pub user: UserRow,
    pub session: SessionState,
}

/// A stored user; an id that does not parse is an error, not a panic.
pub fn user_from_row(row: &UserRow, store: StoreInfo) -> Result<StoredUser, Error> {
    Ok(StoredUser {
        id: UserId::parse(&row.id).map_err(|_| corrupt())?,
        email: row.email.clone(),
        email_verified: row.email_verified,
        name: row.name.clone(),
        metadata: row.metadata.clone(),
        mfa_enabled: row.mfa_enabled,
        created_at: row.created_at,
        store,
    })
}

#[cfg(test)]
mod search_path_tests {
    //! A pooled connection never carries one issuer's `search_path` into
    //! another issuer's request, or into any other use of the pool.
    use super::*;
    use idm_core::fair_share::FairShare;
    use idm_crypto::{PasswordHasher, PasswordParams};
    use idm_db::Db;

    fn admin_url() -> String {
        std::env::var("IDM_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    /// A fresh database (dropped at the end) and a pool of ONE connection
    /// over it, so every handle below runs on the same connection.
    struct OneConnectionStore {
        admin: Db,
        name: String,
        state: crate::State,
    }

    impl OneConnectionStore {
        async fn new(resetting: bool) -> anyhow::Result<Self> {
            let admin = Db::connect(&admin_url(), 1)?;
            let name = format!("idmt_{}_search_path", uuid_hex());
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(admin.pool())
                .await?;
            let url = match admin_url().rsplit_once('/') {
                Some((base, _)) => format!("{base}/{name}"),
                None => anyhow::bail!("IDM_TEST_PG_URL names no database"),
            };
            let db = if resetting {
                Db::connect_session_resetting(&url, 1, None)?
            } else {
                Db::connect(&url, 1)?
            };
            let cheap = PasswordParams {
                memory_kib: 8,
                iterations: 1,
                parallelism: 1,
            };
            Ok(Self {
                admin,
                name,
                state: crate::State {
                    region: idm_core::Region::Weur,
                    jurisdiction: idm_core::Jurisdiction::Eu,
                    database_label: "test".into(),
                    db,
                    hasher: PasswordHasher::new(cheap, 1)?,
                    connections: FairShare::new(1, 8),
                    schemas: Default::default(),
                    bus: None,
                },
            })
        }

        async fn drop_database(self) -> anyhow::Result<()> {
            let Self { admin, name, state } = self;
            drop(state);
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(admin.pool())
            .await?;
            Ok(())
        }
    }

    /// The random tail of a UUIDv7 (its head is the clock, equal for tests
    /// started in the same millisecond).
    fn uuid_hex() -> String {
        let id = idm_core::UserId::generate();
        let body = id.body();
        body[body.len() - 16..].to_owned()
    }

    async fn add_user(store: &IssuerStore, email: &str) -> anyhow::Result<UserId> {
        let id = UserId::generate();
        store
            .insert_user(
                &id,
                &idm_core::Email::parse(email)?,
                None,
                &serde_json::json!({}),
                None,
            )
            .await?;
        Ok(id)
    }

    // The probes below stay runtime statements on purpose: `SHOW` and a
    // `users` read that must fail on a plain checkout cannot be checked
    // against one schema at build time.
    async fn search_path(db: &Db) -> anyhow::Result<String> {
        Ok(sqlx::query_scalar("SHOW search_path")
            .fetch_one(&mut *db.get().await?.conn().await)
            .await?)
    }

    #[tokio::test]
    async fn issuers_interleaved_on_one_pooled_connection_never_see_each_other(
    ) -> anyhow::Result<()> {
        let store = OneConnectionStore::new(true).await?;
        let result = async {
            let (a, b) = (IssuerId::generate(), IssuerId::generate());
            schemas::provision(&store.state.db, &a, &store.state.schemas).await?;
            schemas::provision(&store.state.db, &b, &store.state.schemas).await?;
            let default_path = search_path(&store.state.db).await?;

            let alice = add_user(
                &IssuerStore::open(&store.state, &a).await?,
                "alice@example.com",
            )
            .await?;
            // A plain checkout of the connection that just served issuer A
            // starts from the default path.
            assert_eq!(search_path(&store.state.db).await?, default_path);
            let bob = add_user(
                &IssuerStore::open(&store.state, &b).await?,
                "bob@example.com",
            )
            .await?;
            {
                let as_a = IssuerStore::open(&store.state, &a).await?;
                assert!(as_a.user(&alice).await?.is_some());
                assert!(as_a.user(&bob).await?.is_none(), "A read B's user");
            }
            {
                let as_b = IssuerStore::open(&store.state, &b).await?;
                assert!(as_b.user(&bob).await?.is_some());
                assert!(as_b.user(&alice).await?.is_none(), "B read A's user");
            }
            // A handle for an issuer with no schema here is refused, and
            // what it leaves behind is the default path, not B's.
            assert!(IssuerStore::open(&store.state, &IssuerId::generate())
                .await
                .is_err());
            let plain = store.state.db.get().await?;
            let shown: String = sqlx::query_scalar("SHOW search_path")
                .fetch_one(&mut *plain.conn().await)
                .await?;
            assert_eq!(shown, default_path);
            // Unqualified, the other issuers' tables are out of reach.
            let err = sqlx::query("SELECT id FROM users")
                .fetch_all(&mut *plain.conn().await)
                .await;
            assert!(
                err.is_err(),
                "a plain checkout reached an issuer's users table"
            );
            anyhow::Ok(())
        }
        .await;
        store.drop_database().await?;
        result
    }

    /// `GET /v1/client/me`'s statement (issue 10): the user only for a live
    /// session of that user in that issuer's schema; and the rotation
    /// statement: rotate, replay within the leeway, reuse, revoked.
    #[tokio::test]
    async fn session_user_and_rotation_in_one_statement_each() -> anyhow::Result<()> {
        use crate::storage::SessionState;
        use idm_core::proto::store::{CreateSession, RefreshOutcome, RefreshSession};
        use idm_core::SessionId;
        let store = OneConnectionStore::new(true).await?;
        let result = async {
            let (a, b) = (IssuerId::generate(), IssuerId::generate());
            schemas::provision(&store.state.db, &a, &store.state.schemas).await?;
            schemas::provision(&store.state.db, &b, &store.state.schemas).await?;
            let (alice, bob, session) = {
                let mut as_a = IssuerStore::open(&store.state, &a).await?;
                let alice = add_user(&as_a, "alice@example.com").await?;
                let bob = add_user(&as_a, "bob@example.com").await?;
                let session = SessionId::generate();
                as_a.insert_session(&CreateSession {
                    issuer_id: a.clone(),
                    session_id: session.clone(),
                    user_id: alice.clone(),
                    expires_at: idm_core::now() + std::time::Duration::from_secs(3_600),
                    refresh_token_hash: "h0".into(),
                    device: Default::default(),
                })
                .await?
                .ok_or_else(|| anyhow::anyhow!("no session"))?;
                (alice, bob, session)
            };
            let state_of = |user: UserId, issuer: IssuerId, session: SessionId| {
                let state = &store.state;
                async move {
                    let handle = IssuerStore::open(state, &issuer).await?;
                    anyhow::Ok(handle.session_user(&user, &session).await?.map(
                        |f| match f.session {
                            SessionState::Live => "live",
                            SessionState::Revoked { compromised: true } => "compromised",
                            SessionState::Revoked { .. } => "revoked",
                            SessionState::Unknown => "unknown",
                        },
                    ))
                }
            };
            assert_eq!(
                state_of(alice.clone(), a.clone(), session.clone()).await?,
                Some("live")
            );
            // Another user's session, an unknown one: never alice's profile.
            assert_eq!(
                state_of(bob.clone(), a.clone(), session.clone()).await?,
                Some("unknown")
            );
            assert_eq!(
                state_of(alice.clone(), a.clone(), SessionId::generate()).await?,
                Some("unknown")
            );
            // Issuer B's schema does not hold A's user.
            assert_eq!(
                state_of(alice.clone(), b.clone(), session.clone()).await?,
                None
            );

            let refresh = |from: &str, to: &str| RefreshSession {
                issuer_id: a.clone(),
                token_hash: from.into(),
                new_token_hash: to.into(),
                successor_sealed: Some(format!("sealed-{to}")),
                idle_timeout_seconds: 3_600,
                leeway_seconds: 30,
                device: Default::default(),
            };
            let mut as_a = IssuerStore::open(&store.state, &a).await?;
            let rotated = as_a.refresh(&refresh("h0", "h1")).await?;
            assert!(
                matches!(rotated, RefreshOutcome::Rotated { .. }),
                "{rotated:?}"
            );
            // The same token again within the leeway: its live successor.
            match as_a.refresh(&refresh("h0", "hx")).await? {
                RefreshOutcome::Replayed {
                    successor_hash,
                    successor_sealed,
                    ..
                } => {
                    assert_eq!(
                        (successor_hash.as_str(), successor_sealed.as_str()),
                        ("h1", "sealed-h1")
                    );
                }
                other => anyhow::bail!("expected a replay, got {other:?}"),
            }
            // B's handle cannot rotate A's token (the rotation function is
            // shared by the region's schemas; its tables are the handle's),
            // and its attempt spends nothing: A rotates h1 next.
            // (One connection: A's handle goes back before B's is taken.)
            drop(as_a);
            {
                let mut as_b = IssuerStore::open(&store.state, &b).await?;
                assert!(
                    as_b.refresh(&refresh("h1", "hz")).await.is_err(),
                    "another issuer's handle rotated A's token"
                );
            }
            let mut as_a = IssuerStore::open(&store.state, &a).await?;
            assert!(matches!(
                as_a.refresh(&refresh("h1", "h2")).await?,
                RefreshOutcome::Rotated { .. }
            ));
            // h0's successor is used now: h0 again is reuse.
            assert!(matches!(
                as_a.refresh(&refresh("h0", "hy")).await?,
                RefreshOutcome::Compromised { .. }
            ));
            assert!(
                as_a.refresh(&refresh("h2", "h3")).await.is_err(),
                "a compromised session rotated"
            );
            assert!(as_a.refresh(&refresh("nope", "h4")).await.is_err());
            drop(as_a);
            assert_eq!(
                state_of(alice, a.clone(), session.clone()).await?,
                Some("compromised")
            );
            // The region's revocation log has it (written by the schema's
            // trigger), which is what edges catch up from.
            let revoked =
                crate::storage::revoked_sessions(&store.state.db, None, 100, None).await?;
            assert_eq!(revoked.data.len(), 1, "{revoked:?}");
            assert_eq!(
                (
                    &revoked.data[0].issuer_id,
                    &revoked.data[0].session_id,
                    revoked.data[0].compromised
                ),
                (&a, &session, true)
            );
            anyhow::Ok(())
        }
        .await;
        store.drop_database().await?;
        result
    }

    /// The control: on a pool that does not reset (what the store used
    /// before), the next checkout inherits the last issuer's schema and an
    /// unqualified query reads that issuer's users. This is the leak the
    /// resetting pool closes.
    #[tokio::test]
    async fn without_the_reset_the_next_checkout_inherits_the_last_issuer() -> anyhow::Result<()> {
        let store = OneConnectionStore::new(false).await?;
        let result = async {
            let a = IssuerId::generate();
            schemas::provision(&store.state.db, &a, &store.state.schemas).await?;
            add_user(
                &IssuerStore::open(&store.state, &a).await?,
                "alice@example.com",
            )
            .await?;
            assert_eq!(search_path(&store.state.db).await?, a.store_schema());
            let leaked = sqlx::query("SELECT id FROM users")
                .fetch_all(&mut *store.state.db.get().await?.conn().await)
                .await?;
            assert_eq!(leaked.len(), 1);
            anyhow::Ok(())
        }
        .await;
        store.drop_database().await?;
        result
    }
}
