//! Fair admission to a scarce resource that tenants share (Argon2 workers,
//! database connections): a fixed number of workers, a bounded queue, and
//! a per-tenant share of both.
//!
//! - A tenant may hold (run or wait for) at most its share of the capacity
//!   (workers + queue slots): `max(1, capacity / active tenants)`, where a
//!   tenant is active while it holds anything. Past its share a request is
//!   refused at once ([`Refused`], mapped to `503 overloaded` with
//!   `Retry-After`), never queued: a flood from one tenant cannot grow a
//!   queue everyone else waits behind.
//! - A freed worker goes to the waiting tenant that runs the fewest right
//!   now (ties in turn), not to whoever queued first, so a tenant arriving
//!   behind a flood waits for one worker to free up, not for the flood.
//! - Work admitted before other tenants became active may leave a tenant
//!   above its new, smaller share for a moment; it only drains (new requests
//!   of that tenant are refused until it is back under its share).
//!
//! Waiting is cancel-safe: a waiter that is dropped (its caller's deadline
//! passed, say) leaves the queue, and a slot handed to it is handed on.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a refused caller is told to wait before trying again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Refused: the tenant already holds its share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub retry_after: Duration,
}

#[derive(Default)]
struct Tenant {
    running: usize,
    waiting: VecDeque<(u64, oneshot::Sender<()>)>,
}

impl Tenant {
    fn held(&self) -> usize {
        self.running + self.waiting.len()
    }
}

#[derive(Default)]
struct Inner {
    running: usize,
    waiting: usize,
    next_id: u64,
    tenants: HashMap<String, Tenant>,
    /// Tenants with waiters, in turn order.
    turn: VecDeque<String>,
}

impl Inner {
    fn forget_if_idle(&mut self, tenant: &str) {
        if self.tenants.get(tenant).is_some_and(|t| t.held() == 0) {
            self.tenants.remove(tenant);
        }
    }

    /// Hands free workers to waiters: the waiting tenant running the
    /// fewest first, the earlier in turn on a tie.
    fn dispatch(&mut self, workers: usize) {
        while self.running < workers {
            let mut best: Option<(usize, usize)> = None;
            for (position, name) in self.turn.iter().enumerate() {
                let running = self.tenants.get(name).map_or(usize::MAX, |t| t.running);
                if best.is_none_or(|(_, fewest)| running < fewest) {
                    best = Some((position, running));
                }
            }
            let Some((position, _)) = best else { return };
            let Some(name) = self.turn.remove(position) else {
                return;
            };
            let Some(tenant) = self.tenants.get_mut(&name) else {
                continue;
            };
            let Some((_, wake)) = tenant.waiting.pop_front() else {
                continue;
            };
            // The receiver lives until its waiter has left the queue under
            // this lock (see `Waiter::drop`), so this send is received.
            let _ = wake.send(());
            tenant.running += 1;
            let more = !tenant.waiting.is_empty();
            self.running += 1;
            self.waiting -= 1;
            if more {
                self.turn.push_back(name);
            }
        }
    }
}

/// Workers and queue slots shared fairly between tenants.
pub struct FairShare {
    inner: Arc<Mutex<Inner>>,
    workers: usize,
    capacity: usize,
}

impl FairShare {
    /// `workers` run at once (at least one); `queue` more may wait.
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            workers,
            capacity: workers + queue,
        }
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Workers plus queue slots.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// What one of `active` tenants may hold.
    pub fn share(&self, active: usize) -> usize {
        (self.capacity / active.max(1)).max(1)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// (running, waiting) across tenants, for gauges and tests.
    pub fn load(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.running, inner.waiting)
    }

    /// What `tenant` holds (running, waiting).
    pub fn held_by(&self, tenant: &str) -> (usize, usize) {
        let inner = self.lock();
        inner
            .tenants
            .get(tenant)
            .map_or((0, 0), |t| (t.running, t.waiting.len()))
    }

    /// A worker for `tenant`: at once when one is free and nobody waits,
    /// after waiting in turn otherwise, or refused when `tenant` already
    /// holds its share.
    pub async fn enter(&self, tenant: &str) -> Result<Slot, Refused> {
        let (id, wake) = {
            let mut inner = self.lock();
            let active = inner.tenants.values().filter(|t| t.held() > 0).count();
            let held = inner.tenants.get(tenant).map_or(0, Tenant::held);
            let active = if held == 0 { active + 1 } else { active };
            if held >= self.share(active) {
                return Err(Refused {
                    retry_after: RETRY_AFTER,
                });
            }
            if inner.running < self.workers && inner.turn.is_empty() {
                inner.running += 1;
                inner.tenants.entry(tenant.to_owned()).or_default().running += 1;
                return Ok(self.slot(tenant));
            }
            let id = inner.next_id;
            inner.next_id += 1;
            let (send, wake) = oneshot::channel();
            let entry = inner.tenants.entry(tenant.to_owned()).or_default();
            entry.waiting.push_back((id, send));
            if entry.waiting.len() == 1 {
                inner.turn.push_back(tenant.to_owned());
            }
            inner.waiting += 1;
            // A worker may have been free with others waiting for a moment.
            inner.dispatch(self.workers);
            (id, wake)
        };
        let mut waiter = Waiter {
            inner: Arc::clone(&self.inner),
            tenant: tenant.to_owned(),
            id,
            workers: self.workers,
            wake,
            granted: false,
        };
        match (&mut waiter.wake).await {
            Ok(()) => {
                waiter.granted = true;
                Ok(self.slot(tenant))
            }
            // The sender is dropped only with the whole gate.
            Err(_) => Err(Refused {
                retry_after: RETRY_AFTER,
            }),
        }
    }

    fn slot(&self, tenant: &str) -> Slot {
        Slot {
            inner: Arc::clone(&self.inner),
            tenant: tenant.to_owned(),
            workers: self.workers,
        }
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // The state stays consistent across a panic elsewhere: every change is
    // made in full under the lock.
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

fn release(inner: &Mutex<Inner>, tenant: &str, workers: usize) {
    let mut inner = lock(inner);
    if let Some(t) = inner.tenants.get_mut(tenant) {
        t.running = t.running.saturating_sub(1);
    }
    inner.running = inner.running.saturating_sub(1);
    inner.forget_if_idle(tenant);
    inner.dispatch(workers);
}

/// A worker held by one tenant; dropping it hands the worker on.
pub struct Slot {
    inner: Arc<Mutex<Inner>>,
    tenant: String,
    workers: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        release(&self.inner, &self.tenant, self.workers);
    }
}

struct Waiter {
    inner: Arc<Mutex<Inner>>,
    tenant: String,
    id: u64,
    workers: usize,
    /// Dropped after `drop` has run, so a sender that finds this waiter in
    /// the queue always finds its receiver alive.
    wake: oneshot::Receiver<()>,
    granted: bool,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        let mut inner = lock(&self.inner);
        let queued = inner.tenants.get_mut(&self.tenant).and_then(|t| {
            let position = t.waiting.iter().position(|(id, _)| *id == self.id)?;
            t.waiting.remove(position);
            Some(t.waiting.is_empty())
        });
        match queued {
            Some(emptied) => {
                inner.waiting = inner.waiting.saturating_sub(1);
                if emptied {
                    inner.turn.retain(|name| *name != self.tenant);
                }
                inner.forget_if_idle(&self.tenant);
            }
            None => {
                // A worker was handed over after the caller stopped
                // listening: hand it on.
                drop(inner);
                release(&self.inner, &self.tenant, self.workers);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tenant_past_its_share_is_refused_and_a_newcomer_goes_next() {
        let gate = FairShare::new(2, 2);
        // Alone, a tenant may hold the whole capacity (2 running, 2 waiting).
        let c1 = gate.enter("c").await;
        let c2 = gate.enter("c").await;
        assert!(c1.is_ok() && c2.is_ok());
        let mut waiting = vec![Box::pin(gate.enter("c")), Box::pin(gate.enter("c"))];
        for w in &mut waiting {
            assert!(pending(w.as_mut()));
        }
        assert_eq!(gate.held_by("c"), (2, 2));
        assert_eq!(
            gate.enter("c").await.err(),
            Some(Refused {
                retry_after: RETRY_AFTER
            })
        );
        // Another tenant still gets in line: its share is its own.
        let mut b = Box::pin(gate.enter("b"));
        assert!(pending(b.as_mut()));
        // The freed worker goes to b, who runs nothing, ahead of c's queue.
        drop(c1);
        let b_slot = b.await;
        assert!(b_slot.is_ok());
        assert_eq!(gate.held_by("c"), (1, 2));
        // With two tenants active c's share is two: it holds three, so it
        // is refused until its work drains.
        assert!(gate.enter("c").await.is_err());
        drop(waiting);
        assert_eq!(gate.held_by("c"), (1, 0));
        drop(b_slot);
        drop(c2);
        assert_eq!(gate.load(), (0, 0));
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_the_queue() {
        let gate = FairShare::new(1, 1);
        let held = gate.enter("a").await;
        assert!(held.is_ok());
        let gave_up = tokio::time::timeout(Duration::from_millis(20), gate.enter("a")).await;
        assert!(gave_up.is_err());
        assert_eq!(gate.load(), (1, 0));
        drop(held);
        assert_eq!(gate.load(), (0, 0));
        assert!(gate.enter("a").await.is_ok());
    }

    /// Polls once: whether the future is still pending.
    fn pending<F: std::future::Future>(f: std::pin::Pin<&mut F>) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        f.poll(&mut cx).is_pending()
    }
}
