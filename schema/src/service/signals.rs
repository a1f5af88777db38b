//! Signals a service reacts to: SIGINT and SIGTERM stop it gracefully, SIGHUP
//! reloads what the caller says.
//!
//! A signal that cannot be listened for is logged and then never arrives: a service
//! that cannot see SIGTERM still runs, and is stopped the hard way.

/// Completes on SIGINT (Ctrl-C) or SIGTERM, logging which one arrived.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("received SIGINT"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}

/// Calls `reload` on every SIGHUP, from a task of its own, for as long as the
/// runtime runs. `unheard` says what is lost when SIGHUP cannot be listened for
/// (logged as a warning); on platforms without SIGHUP nothing happens.
pub fn on_hangup(unheard: &'static str, mut reload: impl FnMut() + Send + 'static) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: {unheard}");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            reload();
        }
    });
    #[cfg(not(unix))]
    let _ = (unheard, &mut reload);
}

#[cfg(all(test, unix))]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// SIGHUP reaches the hook. (Only SIGHUP: raising SIGTERM or SIGINT here would
    /// stop the test process whenever no listener is installed yet.)
    #[tokio::test]
    async fn hangup_calls_the_hook_each_time() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        on_hangup("test", move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        // Let the task install its handler before the first signal.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for expected in 1..=2 {
            let status = std::process::Command::new("kill")
                .args(["-HUP", &std::process::id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success());
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while calls.load(Ordering::SeqCst) < expected {
                assert!(
                    std::time::Instant::now() < deadline,
                    "SIGHUP {expected} not seen"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
