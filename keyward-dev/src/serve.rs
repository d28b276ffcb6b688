//! Serving a dev server's router on a bound listener, and stopping it: shared by the ESC and GitHub servers.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::DevError;

/// A router being served. [`Serving::stop`] ends it; dropping it also asks it to stop.
pub struct Serving {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Binds `listen`; `what` names the server in errors. Returns the listener and the address it got.
pub async fn bind(listen: SocketAddr, what: &'static str) -> Result<(tokio::net::TcpListener, SocketAddr), DevError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| DevError::io(what, e))?;
    let addr = listener.local_addr().map_err(|e| DevError::io(what, e))?;
    Ok((listener, addr))
}

/// Serves `app` on a bound listener.
pub fn serve(listener: tokio::net::TcpListener, addr: SocketAddr, what: &'static str, app: axum::Router) -> Serving {
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = rx.await;
        });
        if let Err(e) = serve.await {
            eprintln!("keyward-dev: {what}: {e}");
        }
    });
    Serving {
        addr,
        shutdown: Some(tx),
        task: Some(task),
    }
}

impl Serving {
    /// Stops serving and waits (briefly) for open connections to finish.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Decodes `%XX` escapes of a path segment (invalid escapes stay as they are).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
