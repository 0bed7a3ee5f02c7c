//! One platform per test binary, for the tests that isolation by issuer
//! suffices for: each creates its own accounts (so its own issuers, stores,
//! keys, policies and Redis keys) and its own user addresses on it, and
//! reads nothing another test wrote. Starting a platform (nine databases
//! migrated, a nats-server, every service) is most of a short test's time;
//! sharing it is what makes the suite fast.
//!
//! A test that changes the platform itself keeps a platform of its own
//! ([`Platform::start`]): it stops, kills or restarts services or servers,
//! adds edge replicas or changes edge options, moves the clock, flushes
//! Redis, or asserts on something global (metrics, logs, every row of a
//! table, every Redis key, every mail).
//!
//! Each `#[tokio::test]` runs in a runtime of its own that ends with the
//! test, so the shared platform lives in a runtime on a thread of its own,
//! and its HTTP client keeps no idle connections (a pooled connection is
//! served by a task of the runtime that opened it, which may be a finished
//! test's). Statics are never dropped, so the cleanup when the binary ends
//! is a reaper process: it waits for the test process to close a pipe (it
//! does on any exit, a crash or SIGKILL included), then kills the
//! platform's nats-server, drops its databases and deletes its Redis keys.

use crate::{pg_admin_url, Options, Platform};
use anyhow::Context;
use std::io::Write;
use std::process::{ChildStdin, Command, Stdio};
use tokio::sync::OnceCell;

struct Shared {
    platform: Platform,
    /// Kept open for the life of the process; its end closing is the
    /// reaper's signal. Never written.
    _reaper: ChildStdin,
}

static SHARED: OnceCell<Shared> = OnceCell::const_new();

/// What the reaper runs (`sh`, arguments in the environment): `read` ends
/// at end of file, which comes when the last holder of the pipe (the test
/// process; the pipe is close-on-exec, so no other child holds it) is gone.
const REAPER: &str = r#"
read -r _ || true
for pid in $IDM_REAP_PIDS; do
    kill "$pid" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null
done
for db in $IDM_REAP_DBS; do
    psql "$IDM_REAP_PG" -XAtq -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 &
done
wait
if command -v redis-cli >/dev/null 2>&1; then
    redis-cli -u "$IDM_REAP_REDIS" --scan --pattern "$IDM_REAP_PREFIX*" |
        xargs -r redis-cli -u "$IDM_REAP_REDIS" del >/dev/null 2>&1
fi
rm -rf "$IDM_REAP_DIR"
if [ -n "$IDM_REAP_PG_DIR" ]; then rm -rf "$IDM_REAP_PG_DIR"; fi
"#;

impl Platform {
    /// The test binary's shared platform (started by the first test that
    /// asks), trusting the test process as a proxy like
    /// [`Options::behind_loopback_proxy`]: tests place users by country.
    /// Give every account and every user address a name of the test's own
    /// ([`unique_email`](crate::unique_email)); never stop it.
    pub async fn shared() -> anyhow::Result<&'static Platform> {
        let shared = SHARED.get_or_try_init(start).await?;
        Ok(&shared.platform)
    }
}

/// Loopback trusted as a proxy (tests place users by country), and two
/// platform-wide budgets raised that tests sharing a platform would
/// otherwise split among themselves: the key lookups per client network
/// (every test calls from 127.0.0.1 with keys of its own, and together they
/// miss the key cache far more often than one client of a real platform
/// may; the test of that budget runs on a platform of its own), and each
/// store's queue of database work, which the store shares fairly among the
/// issuers active at once (a test's burst of twenty refreshes was shed with
/// `overloaded` while other tests' issuers were busy on the same store).
fn options() -> Options {
    let mut options = Options::behind_loopback_proxy();
    options.edge_waf.key_lookups_per_minute = 1_000_000;
    options.store_db_queue = 1024;
    // The EU regions on a second PostgreSQL server (one initdb per test
    // process): `IDM_TEST_EU_SERVER=0` keeps them on the machine's.
    options.eu_server = std::env::var("IDM_TEST_EU_SERVER").map_or(true, |v| v != "0");
    options
}

async fn start() -> anyhow::Result<Shared> {
    let (started_tx, started) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("shared-platform".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("shared-platform")
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = started_tx.send(Err(anyhow::Error::from(e)));
                    return;
                }
            };
            runtime.block_on(async move {
                let platform = Platform::start_with(options()).await;
                let failed = platform.is_err();
                let _ = started_tx.send(platform);
                if !failed {
                    // The services' tasks live in this runtime: keep it
                    // until the process ends.
                    std::future::pending::<()>().await;
                }
            });
        })?;
    let mut platform = started
        .await
        .context("the shared platform's thread ended")??;
    platform.http = reqwest::Client::builder()
        .user_agent("idm-testkit")
        .pool_max_idle_per_host(0)
        .build()?;
    let reaper = reaper(&platform)?;
    Ok(Shared {
        platform,
        _reaper: reaper,
    })
}

fn reaper(platform: &Platform) -> anyhow::Result<ChildStdin> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(REAPER)
        .env(
            "IDM_REAP_PIDS",
            platform
                .nats
                .pid()
                .into_iter()
                .chain(platform.eu_pg.as_ref().and_then(|pg| pg.pid()))
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        )
        .env("IDM_REAP_DBS", platform.database_names().join(" "))
        .env("IDM_REAP_PG", pg_admin_url())
        .env("IDM_REAP_REDIS", &platform.redis_url)
        .env("IDM_REAP_PREFIX", &platform.redis_prefix)
        .env("IDM_REAP_DIR", &platform.nats.dir)
        .env(
            "IDM_REAP_PG_DIR",
            platform
                .eu_pg
                .as_ref()
                .map(|pg| pg.dir().to_path_buf())
                .unwrap_or_default(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the shared platform's reaper (sh)")?;
    let mut stdin = child.stdin.take().context("the reaper has no stdin")?;
    // Nothing to say: a flush proves the pipe is open before tests start.
    stdin.flush()?;
    Ok(stdin)
}
