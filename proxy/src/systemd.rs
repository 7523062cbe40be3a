//! What the proxy asks of systemd beyond readiness (which `brine_daemon::systemd` sends): to
//! keep copies of its listening sockets in the unit's file-descriptor store, so that they stay
//! open, with new connections waiting in their backlog, while the proxy restarts; and to let go
//! of a port's copy when its route is released. Outside systemd (no `NOTIFY_SOCKET`) nothing
//! is sent.

use std::io::Read;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use sd_notify::NotifyState;

/// How long a release waits for systemd to confirm it closed its copy of the socket.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the proxy runs as a systemd service that takes notifications.
pub fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty())
}

/// The name a listener is stored under: its address, with `_` for `:` (which systemd does not
/// allow in a name). Inherited sockets are matched by their address, not by this name.
pub fn fd_name(listen: SocketAddr) -> String {
    listen.to_string().replace(':', "_")
}

/// Hands a copy of `listener` to systemd's file-descriptor store. Storing a socket already
/// stored (after a restart) changes nothing.
pub fn store_listener(listen: SocketAddr, listener: &impl AsFd) {
    if !under_systemd() {
        return;
    }
    let name = fd_name(listen);
    let states = [NotifyState::FdStore, NotifyState::FdName(&name)];
    if let Err(err) = sd_notify::notify_with_fds(&states, &[listener.as_fd()]) {
        tracing::warn!(
            %listen,
            "cannot store the listening socket with systemd ({err}); a restart will refuse connections to it"
        );
    }
}

/// Asks systemd to close its copy of the socket of `listen`, and waits until it has, so the
/// port is free when this returns.
pub async fn remove_listener(listen: SocketAddr) {
    if !under_systemd() {
        return;
    }
    let name = fd_name(listen);
    if let Err(err) = sd_notify::notify(&[NotifyState::FdStoreRemove, NotifyState::FdName(&name)]) {
        tracing::warn!(%listen, "cannot remove the listening socket from systemd's store: {err}");
        return;
    }
    if let Err(err) = barrier().await {
        tracing::warn!(%listen, "systemd did not confirm closing its copy of the socket: {err}");
    }
}

/// `BARRIER=1`: systemd closes the pipe end it is sent once it has handled every notification
/// sent before it.
async fn barrier() -> std::io::Result<()> {
    let (mut reader, writer) = std::io::pipe()?;
    sd_notify::notify_with_fds(&[NotifyState::Custom("BARRIER=1")], &[writer.as_fd()])?;
    drop(writer);
    let read = tokio::task::spawn_blocking(move || {
        let mut buffer = [0u8; 16];
        loop {
            match reader.read(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
    });
    match tokio::time::timeout(BARRIER_TIMEOUT, read).await {
        Ok(Ok(result)) => result,
        Ok(Err(err)) => Err(std::io::Error::other(err)),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer in 5s",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_hold_no_colon() {
        assert_eq!(
            fd_name("0.0.0.0:80".parse().expect("address")),
            "0.0.0.0_80"
        );
        assert_eq!(fd_name("[::]:443".parse().expect("address")), "[__]_443");
    }
}
