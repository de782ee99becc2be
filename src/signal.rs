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

/// Calls `f` on every SIGHUP (for ever; spawn it). Without a SIGHUP
/// handler (it cannot be installed) returns at once, with a warning.
pub async fn on_sighup(f: impl Fn()) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
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
