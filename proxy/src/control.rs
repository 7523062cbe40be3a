//! The control socket: a unix socket (mode 0600) the minion sends requests to, one JSON object
//! per line, each answered by one line, in order. A request that cannot be read is answered
//! with an error and the connection stays usable; a line longer than [`MAX_LINE_BYTES`] is
//! answered with an error and the connection is closed.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use brine_common::proxy_control::{ControlRequest, ControlResponse, MAX_LINE_BYTES};
use futures::{SinkExt, StreamExt};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

use crate::ProxyError;
use crate::proxy::Proxy;

/// Binds the control socket at `path`, mode 0600. A socket file left by a proxy that is gone
/// is replaced; one that a proxy still answers on is not.
pub async fn bind(path: &Path) -> Result<UnixListener, ProxyError> {
    let failed = |message: String| ProxyError::Control {
        path: path.to_owned(),
        message,
    };
    match std::fs::symlink_metadata(path) {
        Ok(metadata) => {
            if !metadata.file_type().is_socket() {
                return Err(failed(
                    "it exists and is not a socket; remove it or configure another control_socket"
                        .to_owned(),
                ));
            }
            if UnixStream::connect(path).await.is_ok() {
                return Err(failed(
                    "another brine-proxy answers on it; stop it first".to_owned(),
                ));
            }
            std::fs::remove_file(path)
                .map_err(|err| failed(format!("cannot remove the stale socket: {err}")))?;
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(failed(err.to_string())),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|err| failed(format!("cannot create {}: {err}", dir.display())))?;
    }
    let listener = UnixListener::bind(path).map_err(|err| failed(err.to_string()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|err| failed(format!("cannot make it private: {err}")))?;
    Ok(listener)
}

/// Serves control connections until `stop`.
pub async fn serve(listener: UnixListener, proxy: Arc<Proxy>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, Arc::clone(&proxy), stop.clone()));
                }
                Err(err) => {
                    tracing::warn!("cannot accept on the control socket: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Answers the requests of one connection, in order.
async fn connection(stream: UnixStream, proxy: Arc<Proxy>, stop: CancellationToken) {
    let mut lines = Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
    loop {
        let line = tokio::select! {
            () = stop.cancelled() => return,
            line = lines.next() => line,
        };
        let (response, close) = match line {
            None => return,
            Some(Ok(line)) if line.trim().is_empty() => continue,
            Some(Ok(line)) => match serde_json::from_str::<ControlRequest>(&line) {
                Ok(request) => (proxy.handle(request).await, false),
                Err(err) => (error(format!("cannot read the request: {err}")), false),
            },
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => (
                error(format!(
                    "the request is longer than {MAX_LINE_BYTES} bytes; closing the connection"
                )),
                true,
            ),
            Some(Err(LinesCodecError::Io(err)))
                if err.kind() == std::io::ErrorKind::InvalidData =>
            {
                (
                    error("the request is not UTF-8; closing the connection".to_owned()),
                    true,
                )
            }
            Some(Err(LinesCodecError::Io(err))) => {
                tracing::debug!("control connection ended: {err}");
                return;
            }
        };
        let text = match serde_json::to_string(&response) {
            Ok(text) => text,
            Err(err) => {
                tracing::error!("cannot write an answer: {err}");
                return;
            }
        };
        if lines.send(text).await.is_err() || close {
            return;
        }
    }
}

fn error(message: String) -> ControlResponse {
    ControlResponse::Error { message }
}
