//! Process signals.

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

/// Installs a SIGHUP handler now (in the current tokio runtime) and
/// returns the loop that calls `f` on every SIGHUP, for ever (spawn it).
/// Installing it before the server announces itself means a SIGHUP sent
/// right after start reloads instead of killing the process (SIGHUP's
/// default action). Without a handler (it cannot be installed) the loop
/// returns at once, with a warning.
pub fn on_sighup(f: impl Fn() + Send + 'static) -> impl Future<Output = ()> + Send {
    use tokio::signal::unix::{SignalKind, signal};
    let hup = signal(SignalKind::hangup());
    async move {
        let mut hup = match hup {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "no SIGHUP handler: certificates reload on file change only");
                return;
            }
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: re-reading the TLS certificate and key");
            f();
        }
    }
}
