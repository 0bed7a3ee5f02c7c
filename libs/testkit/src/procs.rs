//! Private PostgreSQL and Redis servers for fault-injection tests: each on a
//! free port with its files in a temporary directory, so a test can kill and
//! restart them without disturbing any other test or the machine's own
//! servers. Both are killed (and their directories removed) when dropped.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Sends `signal` (`TERM`, `QUIT`, …) to `pid` with the `kill` command (the
/// workspace forbids `unsafe`, so no `libc::kill`).
async fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = tokio::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .await?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

/// Waits for `child` to exit, killing it after `grace`.
async fn reap(child: &mut tokio::process::Child, grace: Duration) {
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// A directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(what: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("idmt-{what}-{}", crate::random_hex(6)));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The PostgreSQL binaries: `IDM_TEST_PG_BIN` (a directory), else the newest
/// `/usr/lib/postgresql/<v>/bin`, else the `PATH`.
fn pg_binary(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("IDM_TEST_PG_BIN") {
        return Path::new(&dir).join(name);
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path().join("bin").join(name)))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_else(|| PathBuf::from(name))
}

/// PostgreSQL refuses to run as root: as root, its files and processes
/// belong to the `postgres` user (uid, gid from /etc/passwd).
fn run_as() -> anyhow::Result<Option<(u32, u32)>> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self")?.uid() != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    let entry = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .context("running as root and there is no postgres user to run PostgreSQL as")?;
    let fields: Vec<&str> = entry.split(':').collect();
    let uid = fields.get(2).context("passwd entry")?.parse()?;
    let gid = fields.get(3).context("passwd entry")?.parse()?;
    Ok(Some((uid, gid)))
}

/// A private PostgreSQL cluster (trust authentication, TCP on 127.0.0.1
/// only, no fsync: a killed server loses nothing the OS has, which is what
/// these tests are about).
pub struct PrivatePostgres {
    pub port: u16,
    dir: TempDir,
    user: Option<(u32, u32)>,
    child: Option<tokio::process::Child>,
}

impl PrivatePostgres {
    /// `initdb` into a temporary directory, then starts the server.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = TempDir::new("pg")?;
        let user = run_as()?;
        let data = dir.0.join("data");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&dir.0, Some(uid), Some(gid))?;
        }
        let mut initdb = tokio::process::Command::new(pg_binary("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some((uid, gid)) = user {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().await.context("running initdb")?;
        anyhow::ensure!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            port: 0,
            dir,
            user,
            child: None,
        };
        let mut last = None;
        // A port picked free can be taken before the server binds it.
        for _ in 0..5 {
            pg.port = free_port()?;
            match pg.spawn().await {
                Ok(()) => return Ok(pg),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("postgres did not start")))
    }

    /// The postmaster's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// The temporary directory holding its files.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.0.join("postgres.log"))?;
        if let Some((uid, gid)) = self.user {
            std::os::unix::fs::chown(self.dir.0.join("postgres.log"), Some(uid), Some(gid))?;
        }
        let mut command = tokio::process::Command::new(pg_binary("postgres"));
        command
            .arg("-D")
            .arg(self.dir.0.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=300"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        if let Some((uid, gid)) = self.user {
            command.uid(uid).gid(gid);
        }
        self.child = Some(command.spawn().context("starting postgres")?);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    let log = std::fs::read_to_string(self.dir.0.join("postgres.log"))
                        .unwrap_or_default();
                    anyhow::bail!("postgres exited ({status}):\n{log}");
                }
            }
            if crate::pg_connect(&self.url("postgres")).await.is_ok() {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "postgres on port {} not ready within 20 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server the way a crash would (`SIGQUIT`: immediate
    /// shutdown, no checkpoint; the next start replays the WAL).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                signal(pid, "QUIT").await?;
            }
            reap(&mut child, Duration::from_secs(10)).await;
        }
        Ok(())
    }

    /// Starts the server again on the same port and data directory.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "postgres is running");
        self.spawn().await
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // SIGKILL to the postmaster alone would leave its backends
            // running; they exit on their own once it is gone.
            let _ = child.start_kill();
        }
    }
}

/// A private redis-server without persistence (like the machines' and the
/// compose file's): a restart starts empty.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<tokio::process::Child>,
}

impl PrivateRedis {
    pub async fn start() -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..5 {
            let mut redis = Self {
                port: free_port()?,
                child: None,
            };
            match redis.spawn().await {
                Ok(()) => return Ok(redis),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let child = tokio::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server")?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    anyhow::bail!("redis-server exited: {status}");
                }
            }
            if self.ping().await.is_ok() {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "redis-server not ready within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let mut c = redis::Client::open(self.url())?
            .get_multiplexed_async_connection()
            .await?;
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(())
    }

    /// Kills the server (SIGKILL): everything in it is gone.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
        Ok(())
    }

    /// Starts it again, empty, on the same port.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "redis-server is running");
        self.spawn().await
    }
}

/// Terminates a child gracefully (`SIGTERM`), killing it after `grace`.
pub(crate) async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let _ = signal(pid, "TERM").await;
    }
    reap(child, grace).await;
}
