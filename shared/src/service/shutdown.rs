//! Shutdown: one token every task of a function watches. The binaries
//! trigger it on SIGTERM (Kubernetes, KEDA scale-in) or Ctrl-C; `tributary
//! dev` and the tests trigger it by hand, one function or stage at a time.
//!
//! Guarantees: once triggered it stays triggered, and every clone sees it,
//! including clones made afterwards and tasks that start waiting later.

use std::sync::Arc;

use tokio::sync::watch;

/// A shutdown signal shared by clones.
#[derive(Clone, Debug)]
pub struct Shutdown(Arc<watch::Sender<bool>>);

impl Default for Shutdown {
    fn default() -> Self {
        Self(Arc::new(watch::Sender::new(false)))
    }
}

impl Shutdown {
    /// A token that fires only when [`Shutdown::trigger`] is called.
    pub fn new() -> Self {
        Self::default()
    }

    /// A token that fires on SIGTERM or Ctrl-C (and on [`Shutdown::trigger`]).
    /// Needs a Tokio runtime: it spawns the task that listens.
    pub fn on_signal() -> Self {
        let shutdown = Self::new();
        let fire = shutdown.clone();
        tokio::spawn(async move {
            signal().await;
            fire.trigger();
        });
        shutdown
    }

    /// Fire it: every clone's [`Shutdown::triggered`] resolves.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// Whether it has fired.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once it has fired (at once if it already has).
    pub async fn triggered(&self) {
        self.wait().await;
    }

    /// A `'static` future that resolves once it has fired, for APIs that
    /// take a shutdown future (axum's graceful shutdown, the consumer runner).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut fired = self.0.subscribe();
        async move {
            // The sender lives as long as any clone; an error would mean none is left to fire it.
            let _ = fired.wait_for(|fired| *fired).await;
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("interrupt received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_trigger_reaches_every_clone_even_later_ones() {
        let s = Shutdown::new();
        let early = s.clone();
        let waiting = tokio::spawn(async move { early.triggered().await });
        assert!(!s.is_triggered());
        s.trigger();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("a waiting clone wakes")
            .expect("task");
        let late = s.clone();
        assert!(late.is_triggered());
        tokio::time::timeout(std::time::Duration::from_secs(5), late.wait())
            .await
            .expect("a clone made afterwards sees it at once");
    }
}
