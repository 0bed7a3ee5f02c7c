//! How the test kit runs a service: its configuration kept so it can be
//! started again, and either in the test's own runtime (the default) or in a
//! runtime of its own on its own thread, which can be killed: dropping that
//! runtime ends every task of the service at once (its HTTP connections,
//! in-flight handlers, bus and database connections), as a killed process
//! would, without waiting for anything to drain.

use futures::future::BoxFuture;
use idm_telemetry::Running;
use std::net::SocketAddr;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// A service's configuration, kept to start it again.
#[derive(Clone)]
pub(crate) enum Spec {
    Store(idm_user_store::Config),
    Session(idm_session::Config),
    User(idm_user::Config),
    Account(idm_account::Config),
    Auth(Box<idm_auth::Config>),
    Deletion(idm_deletion_worker::Config),
    Webhook(idm_webhook::Config),
    Edge(Box<idm_edge_guard::Config>),
}

impl Spec {
    fn start(self, stop: CancellationToken) -> BoxFuture<'static, anyhow::Result<Running>> {
        Box::pin(async move {
            Ok(match self {
                Spec::Store(c) => idm_user_store::start(c, stop).await?,
                Spec::Session(c) => idm_session::start(c, stop).await?,
                Spec::User(c) => idm_user::start(c, stop).await?,
                Spec::Account(c) => idm_account::start(c, stop).await?,
                Spec::Auth(c) => idm_auth::start(*c, stop).await?,
                Spec::Deletion(c) => idm_deletion_worker::start(c, stop).await?,
                Spec::Webhook(c) => idm_webhook::start(c, stop).await?,
                Spec::Edge(c) => idm_edge_guard::start(*c, stop).await?,
            })
        })
    }

    /// The master keys of session, user or auth (for a master-key rotation).
    fn master_keys_mut(
        &mut self,
    ) -> Option<(
        &mut secrecy::SecretString,
        &mut Option<secrecy::SecretString>,
    )> {
        match self {
            Spec::Session(c) => Some((&mut c.master_key, &mut c.master_key_previous)),
            Spec::User(c) => Some((&mut c.master_key, &mut c.master_key_previous)),
            Spec::Auth(c) => Some((&mut c.master_key, &mut c.master_key_previous)),
            Spec::Webhook(c) => Some((&mut c.master_key, &mut c.master_key_previous)),
            _ => None,
        }
    }

    /// The next start binds the addresses this one got, so a restarted
    /// service is where its callers expect it.
    fn pin(&mut self, http: SocketAddr, ops: Option<SocketAddr>) {
        match self {
            Spec::Store(c) => c.basics.http_addr = http,
            Spec::Session(c) => c.basics.http_addr = http,
            Spec::User(c) => c.basics.http_addr = http,
            Spec::Account(c) => c.basics.http_addr = http,
            Spec::Auth(c) => c.basics.http_addr = http,
            Spec::Deletion(c) => c.basics.http_addr = http,
            Spec::Webhook(c) => c.basics.http_addr = http,
            Spec::Edge(c) => {
                c.basics.http_addr = http;
                if let Some(ops) = ops {
                    c.ops_addr = ops;
                }
            }
        }
    }
}

enum Handle {
    InProcess(Running),
    Own {
        kill: oneshot::Sender<()>,
        done: oneshot::Receiver<()>,
    },
}

/// One service of a platform.
pub(crate) struct Service {
    spec: Spec,
    own_runtime: bool,
    stop: CancellationToken,
    handle: Option<Handle>,
    pub http_addr: SocketAddr,
    pub ops_addr: Option<SocketAddr>,
}

impl Service {
    /// Starts `spec`; `stop` is its shutdown token (a child of the platform's).
    pub async fn start(
        name: &str,
        spec: Spec,
        own_runtime: bool,
        stop: CancellationToken,
    ) -> anyhow::Result<Self> {
        let mut service = Self {
            spec,
            own_runtime,
            stop,
            handle: None,
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            ops_addr: None,
        };
        service.launch(name).await?;
        Ok(service)
    }

    async fn launch(&mut self, name: &str) -> anyhow::Result<()> {
        let spec = self.spec.clone();
        let stop = self.stop.clone();
        let (handle, http, ops) = if self.own_runtime {
            let (ready_tx, ready_rx) = oneshot::channel();
            let (kill, kill_rx) = oneshot::channel::<()>();
            let (done_tx, done) = oneshot::channel();
            std::thread::Builder::new()
                .name(format!("svc-{name}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow::Error::from(e)));
                            return;
                        }
                    };
                    let stop_own = stop.clone();
                    match runtime.block_on(spec.start(stop)) {
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                        Ok(running) => {
                            let _ = ready_tx.send(Ok((running.http_addr, running.ops_addr)));
                            runtime.block_on(async move {
                                tokio::select! {
                                    _ = kill_rx => {}
                                    _ = running.wait(&stop_own) => {}
                                }
                            });
                        }
                    }
                    // Drops every task of the service without waiting.
                    runtime.shutdown_background();
                    let _ = done_tx.send(());
                })?;
            let (http, ops) = ready_rx.await??;
            (Handle::Own { kill, done }, http, ops)
        } else {
            let running = spec.start(stop).await?;
            let (http, ops) = (running.http_addr, running.ops_addr);
            (Handle::InProcess(running), http, ops)
        };
        self.spec.pin(http, ops);
        self.http_addr = http;
        self.ops_addr = ops;
        self.handle = Some(handle);
        Ok(())
    }

    /// Asks the service to stop (as SIGTERM would); it drains in-flight work.
    pub fn request_stop(&self) {
        self.stop.cancel();
    }

    /// Waits until it has stopped (after [`Self::request_stop`] or a kill).
    pub async fn stopped(&mut self) {
        match self.handle.take() {
            Some(Handle::InProcess(running)) => {
                if let Err(e) = running.wait(&self.stop).await {
                    tracing::warn!(error = %e, "service stopped with an error");
                }
            }
            Some(Handle::Own { done, kill }) => {
                let _ = done.await;
                drop(kill);
            }
            None => {}
        }
    }

    /// Ends the service at once, as `kill -9` would: only for a service in
    /// its own runtime (one in the test's runtime is stopped and drained).
    pub async fn kill(&mut self) {
        match self.handle.take() {
            Some(Handle::Own { kill, done }) => {
                let _ = kill.send(());
                let _ = done.await;
            }
            Some(Handle::InProcess(running)) => {
                self.stop.cancel();
                if let Err(e) = running.wait(&self.stop).await {
                    tracing::warn!(error = %e, "service stopped with an error");
                }
            }
            None => {}
        }
    }

    /// Ends the service without waiting, from synchronous code (the
    /// platform's `Drop` when a test failed before `stop`): its shutdown
    /// token is cancelled and a runtime of its own is told to drop every
    /// task. A service in the test's runtime ends with that runtime.
    pub fn abandon(&mut self) {
        self.stop.cancel();
        if let Some(Handle::Own { kill, .. }) = self.handle.take() {
            let _ = kill.send(());
        }
    }

    /// The master keys (current, previous) this service starts with.
    pub fn master_keys(
        &mut self,
    ) -> Option<(secrecy::SecretString, Option<secrecy::SecretString>)> {
        self.spec
            .master_keys_mut()
            .map(|(current, previous)| (current.clone(), previous.clone()))
    }

    /// Sets the master keys for its next start; `false` when it has none.
    pub fn set_master_keys(
        &mut self,
        current: secrecy::SecretString,
        previous: Option<secrecy::SecretString>,
    ) -> bool {
        match self.spec.master_keys_mut() {
            Some((c, p)) => {
                *c = current;
                *p = previous;
                true
            }
            None => false,
        }
    }

    /// The configuration the next start uses.
    pub fn spec_mut(&mut self) -> &mut Spec {
        &mut self.spec
    }

    pub fn is_running(&self) -> bool {
        self.handle.is_some()
    }

    /// Starts it again (after a stop or a kill) on the same addresses, with
    /// a fresh shutdown token from `parent`.
    pub async fn start_again(
        &mut self,
        name: &str,
        parent: &CancellationToken,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(self.handle.is_none(), "{name} is running");
        self.stop = parent.child_token();
        self.launch(name).await
    }
}
