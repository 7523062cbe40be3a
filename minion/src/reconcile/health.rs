//! When a freshly started container counts as healthy: the gate a replacement must pass before
//! the container it replaces goes away.
//!
//! The waiting logic ([`wait_until_healthy`]) only sees a [`Target`], so it is tested with a
//! script and paused time; [`RuntimeTarget`] is the real container behind the runtime, with
//! the HTTP, TCP and exec probes.

use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use brine_common::spec::{HealthCheck, Probe};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep_until, timeout};

use crate::runtime::{ContainerRuntime, ContainerStatus, DockerHealth, RuntimeError};

/// The longest one probe attempt may take, however long the interval: a probe that needs more
/// is as good as failed for a service about to take traffic.
const MAX_ATTEMPT: Duration = Duration::from_secs(5);

/// How long one look at the container (`docker inspect`) may take; an engine that does not
/// answer must not stretch the wait past its deadline by much.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a new container did not count as healthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unhealthy {
    #[error("the container exited with status {0}")]
    Exited(i64),
    /// Docker brought a crashed process back (restart policy) between two looks.
    #[error("the container exited and Docker restarted it")]
    Restarted,
    #[error("health check failed for {}: {last}", humantime::format_duration(*.deadline))]
    Deadline { deadline: Duration, last: String },
    /// Removed while the wait looked at it (by hand, or by another program).
    #[error("the container was removed")]
    Removed,
}

/// What the wait looks at: a real container in production, a script in tests.
pub trait Target: Sync {
    /// The container's state now; `Err` says why it could not be seen.
    fn status(&self) -> impl Future<Output = Result<ContainerStatus, RuntimeError>> + Send;

    /// One probe attempt against the running container `status` describes; `Err` says why it
    /// failed.
    fn probe(&self, status: &ContainerStatus) -> impl Future<Output = Result<(), String>> + Send;
}

/// Waits until `target` has passed `check` continuously, and stayed running, for
/// `min_healthy_ms`. It fails as soon as the container exits, or at `deadline_ms` after the
/// call (the container has just been started) with the last probe error. Each look and each
/// probe attempt has its own timeout, so the wait always ends.
pub async fn wait_until_healthy(
    check: &HealthCheck,
    target: &impl Target,
) -> Result<(), Unhealthy> {
    let started = Instant::now();
    let interval = Duration::from_millis(check.interval_ms.into());
    let min_healthy = Duration::from_millis(check.min_healthy_ms.into());
    let deadline_after = Duration::from_millis(check.deadline_ms.into());
    let deadline = started + deadline_after;
    let attempt_limit = interval.min(MAX_ATTEMPT);
    let mut healthy_since: Option<Instant> = None;
    let mut last = String::from("no check completed");
    loop {
        let attempt = Instant::now();
        let verdict = match timeout(INSPECT_TIMEOUT, target.status()).await {
            Ok(Ok(status)) => {
                if !status.running {
                    return Err(Unhealthy::Exited(status.exit_code));
                }
                // The container was created for this wait, so any restart happened during it.
                if status.restart_count > 0 {
                    return Err(Unhealthy::Restarted);
                }
                match timeout(attempt_limit, target.probe(&status)).await {
                    Ok(verdict) => verdict,
                    Err(_) => Err(format!(
                        "no answer within {}",
                        humantime::format_duration(attempt_limit)
                    )),
                }
            }
            Ok(Err(RuntimeError::Gone(_))) => return Err(Unhealthy::Removed),
            Ok(Err(err)) => Err(format!("inspect the container: {err}")),
            Err(_) => Err(format!(
                "docker did not answer an inspect within {}",
                humantime::format_duration(INSPECT_TIMEOUT)
            )),
        };
        match verdict {
            Ok(()) => {
                let since = *healthy_since.get_or_insert(attempt);
                if attempt - since >= min_healthy {
                    return Ok(());
                }
            }
            Err(err) => {
                // Health must be continuous: a failure starts the count again.
                healthy_since = None;
                last = err;
            }
        }
        if Instant::now() >= deadline {
            return Err(Unhealthy::Deadline {
                deadline: deadline_after,
                last,
            });
        }
        // Look again after the interval, or as soon as the container has been healthy long
        // enough; one last look at the deadline.
        let mut next = attempt + interval;
        if let Some(since) = healthy_since {
            next = next.min(since + min_healthy);
        }
        sleep_until(next.min(deadline)).await;
    }
}

/// A container on the engine, probed as its spec says.
pub struct RuntimeTarget<'a, R> {
    pub runtime: &'a R,
    /// Docker's id of the container.
    pub id: &'a str,
    /// `None`: the image's HEALTHCHECK if it has one, else being up is enough.
    pub probe: Option<&'a Probe>,
}

impl<R: ContainerRuntime> Target for RuntimeTarget<'_, R> {
    async fn status(&self) -> Result<ContainerStatus, RuntimeError> {
        self.runtime.inspect(self.id).await
    }

    async fn probe(&self, status: &ContainerStatus) -> Result<(), String> {
        match self.probe {
            Some(Probe::Http { port, path }) => http_get(address(status, *port)?, path).await,
            Some(Probe::Tcp { port }) => tcp_connect(address(status, *port)?).await,
            Some(Probe::Exec { command }) => match self.runtime.exec(self.id, command).await {
                Ok(0) => Ok(()),
                Ok(code) => Err(format!("{command:?} exited with status {code}")),
                Err(err) => Err(format!("exec {command:?}: {err}")),
            },
            None => image_verdict(status),
        }
    }
}

/// The verdict without a probe of brine's own: the image's HEALTHCHECK if it has one; without
/// one, running (checked before every probe) is all there is.
fn image_verdict(status: &ContainerStatus) -> Result<(), String> {
    match status.docker_health {
        None | Some(DockerHealth::Healthy) => Ok(()),
        Some(DockerHealth::Starting) => Err("the image's HEALTHCHECK has not passed yet".into()),
        Some(DockerHealth::Unhealthy) => Err("the image's HEALTHCHECK reports unhealthy".into()),
    }
}

/// The container's own address and `port`: the probe reaches it as a neighbour on its Docker
/// network would, not through published host ports (which it may not have).
fn address(status: &ContainerStatus, port: u16) -> Result<SocketAddr, String> {
    status
        .ip_address
        .map(|ip| SocketAddr::new(ip, port))
        .ok_or_else(|| "the container has no IP address to probe".into())
}

/// Passes when something accepts a TCP connection at `address`.
async fn tcp_connect(address: SocketAddr) -> Result<(), String> {
    TcpStream::connect(address)
        .await
        .map(drop)
        .map_err(|err| format!("connect to {address}: {err}"))
}

/// Passes when `GET path` at `address` answers 2xx or 3xx (redirects are not followed: the
/// service answered, which is what the probe asks).
async fn http_get(address: SocketAddr, path: &str) -> Result<(), String> {
    let url = format!("http://{address}{path}");
    let stream = TcpStream::connect(address)
        .await
        .map_err(|err| format!("GET {url}: connect: {err}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, String>(TokioIo::new(stream))
            .await
            .map_err(|err| format!("GET {url}: {}", describe(&err)))?;
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, address.to_string())
        .body(String::new())
        .map_err(|err| format!("GET {url}: {err}"))?;
    // The connection is driven here rather than in a spawned task, so that dropping the probe
    // at its timeout also drops the connection.
    let send = sender.send_request(request);
    tokio::pin!(send);
    let response = tokio::select! {
        response = &mut send => response,
        // The server may answer and close at once: the answer is then waiting for `send`,
        // which otherwise fails now that the connection is gone.
        ended = connection => match (send.await, ended) {
            (Err(err), Err(cause)) => {
                return Err(format!("GET {url}: {}: {}", describe(&err), describe(&cause)));
            }
            (response, _) => response,
        },
    }
    .map_err(|err| format!("GET {url}: {}", describe(&err)))?;
    let status = response.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("GET {url} answered {status}"))
    }
}

/// hyper's errors print a summary ("error trying to connect"); the cause is further down.
fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Mutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What the script answers to one look.
    #[derive(Debug, Clone)]
    enum Step {
        /// Running, and the probe gives this.
        Probe(Result<(), &'static str>),
        /// Running, and the probe never answers.
        Hang,
        /// Not running any more.
        Exited(i64),
        /// Running again after Docker restarted it.
        Restarted,
        /// Removed.
        Gone,
    }

    /// Answers each look with the next step (the last one repeats) and records when.
    struct Script {
        steps: Mutex<VecDeque<Step>>,
        looks: Mutex<Vec<Instant>>,
    }

    impl Script {
        fn new(steps: &[Step]) -> Self {
            Self {
                steps: Mutex::new(steps.iter().cloned().collect()),
                looks: Mutex::new(vec![]),
            }
        }

        fn current(&self) -> Step {
            let steps = self.steps.lock().unwrap();
            steps.front().cloned().expect("a script has steps")
        }

        fn looks(&self, since: Instant) -> Vec<Duration> {
            let looks = self.looks.lock().unwrap();
            looks.iter().map(|at| *at - since).collect()
        }
    }

    fn running() -> ContainerStatus {
        ContainerStatus {
            running: true,
            exit_code: 0,
            restart_count: 0,
            docker_health: None,
            ip_address: None,
        }
    }

    impl Target for Script {
        async fn status(&self) -> Result<ContainerStatus, RuntimeError> {
            self.looks.lock().unwrap().push(Instant::now());
            Ok(match self.current() {
                Step::Gone => return Err(RuntimeError::Gone("c1".into())),
                Step::Exited(code) => ContainerStatus {
                    running: false,
                    exit_code: code,
                    ..running()
                },
                Step::Restarted => ContainerStatus {
                    restart_count: 1,
                    ..running()
                },
                Step::Probe(_) | Step::Hang => running(),
            })
        }

        async fn probe(&self, _status: &ContainerStatus) -> Result<(), String> {
            let step = {
                let mut steps = self.steps.lock().unwrap();
                let step = steps.front().cloned().expect("a script has steps");
                if steps.len() > 1 {
                    steps.pop_front();
                }
                step
            };
            match step {
                Step::Probe(verdict) => verdict.map_err(str::to_owned),
                Step::Hang => std::future::pending().await,
                Step::Exited(_) | Step::Restarted | Step::Gone => unreachable!("not probed"),
            }
        }
    }

    fn check(interval_ms: u32, min_healthy_ms: u32, deadline_ms: u32) -> HealthCheck {
        HealthCheck {
            probe: None,
            interval_ms,
            min_healthy_ms,
            deadline_ms,
        }
    }

    const PASS: Step = Step::Probe(Ok(()));
    const REFUSED: Step = Step::Probe(Err("connection refused"));

    fn secs(looks: &[u64]) -> Vec<Duration> {
        looks.iter().map(|s| Duration::from_secs(*s)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn passes_once_healthy_for_min_healthy_after_failed_probes() {
        let script = Script::new(&[REFUSED, REFUSED, REFUSED, PASS]);
        let started = Instant::now();
        let result = wait_until_healthy(&check(1_000, 2_000, 60_000), &script).await;
        assert_eq!(result, Ok(()));
        // Passing from 3 s on; healthy for 2 s at 5 s.
        assert_eq!(script.looks(started), secs(&[0, 1, 2, 3, 4, 5]));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn fails_at_the_deadline_with_the_last_probe_error() {
        let script = Script::new(&[Step::Probe(Err("HTTP 500")), REFUSED]);
        let started = Instant::now();
        let result = wait_until_healthy(&check(1_000, 2_000, 10_000), &script).await;
        let err = result.expect_err("never healthy");
        assert_eq!(
            err,
            Unhealthy::Deadline {
                deadline: Duration::from_secs(10),
                last: "connection refused".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "health check failed for 10s: connection refused"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(
            script.looks(started).len(),
            11,
            "one look per second, 0 to 10"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_that_exits_fails_at_once() {
        let script = Script::new(&[PASS, PASS, Step::Exited(1)]);
        let started = Instant::now();
        let result = wait_until_healthy(&check(1_000, 5_000, 60_000), &script).await;
        assert_eq!(result, Err(Unhealthy::Exited(1)));
        assert_eq!(
            Unhealthy::Exited(1).to_string(),
            "the container exited with status 1"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_removed_during_the_wait_fails_at_once() {
        let script = Script::new(&[PASS, Step::Gone]);
        let started = Instant::now();
        let result = wait_until_healthy(&check(1_000, 5_000, 60_000), &script).await;
        assert_eq!(result, Err(Unhealthy::Removed));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_container_docker_restarted_fails() {
        let script = Script::new(&[PASS, Step::Restarted]);
        let result = wait_until_healthy(&check(1_000, 5_000, 60_000), &script).await;
        assert_eq!(result, Err(Unhealthy::Restarted));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_starts_min_healthy_again() {
        let script = Script::new(&[PASS, PASS, REFUSED, PASS]);
        let started = Instant::now();
        let result = wait_until_healthy(&check(1_000, 2_000, 60_000), &script).await;
        assert_eq!(result, Ok(()));
        // Without the failure at 2 s it would have passed then; it counts again from 3 s.
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_interval_looks_again_when_min_healthy_is_reached() {
        let script = Script::new(&[PASS]);
        let started = Instant::now();
        let result = wait_until_healthy(&check(10_000, 2_000, 60_000), &script).await;
        assert_eq!(result, Ok(()));
        assert_eq!(script.looks(started), secs(&[0, 2]));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_min_healthy_passes_on_the_first_good_probe() {
        let script = Script::new(&[PASS]);
        let result = wait_until_healthy(&check(1_000, 0, 60_000), &script).await;
        assert_eq!(result, Ok(()));
        assert_eq!(script.looks.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_hangs_times_out_and_the_wait_still_ends() {
        let script = Script::new(&[Step::Hang]);
        let started = Instant::now();
        let result = wait_until_healthy(&check(500, 1_000, 3_000), &script).await;
        assert_eq!(
            result,
            Err(Unhealthy::Deadline {
                deadline: Duration::from_secs(3),
                last: "no answer within 500ms".into()
            })
        );
        // The last attempt starts at the deadline and may use its whole timeout.
        assert!(
            started.elapsed() <= Duration::from_millis(3_500),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_never_take_longer_than_five_seconds() {
        let script = Script::new(&[Step::Hang]);
        let result = wait_until_healthy(&check(30_000, 0, 30_000), &script).await;
        assert!(
            matches!(&result, Err(Unhealthy::Deadline { last, .. }) if last == "no answer within 5s"),
            "{result:?}"
        );
    }

    #[test]
    fn without_a_probe_the_image_healthcheck_decides() {
        let verdict = |docker_health| {
            image_verdict(&ContainerStatus {
                docker_health,
                ..running()
            })
        };
        assert_eq!(verdict(None), Ok(()));
        assert_eq!(verdict(Some(DockerHealth::Healthy)), Ok(()));
        let starting = verdict(Some(DockerHealth::Starting)).unwrap_err();
        assert!(starting.contains("not passed yet"), "{starting}");
        let unhealthy = verdict(Some(DockerHealth::Unhealthy)).unwrap_err();
        assert!(unhealthy.contains("reports unhealthy"), "{unhealthy}");
    }

    /// A loopback server that answers every connection with `response`, or stays silent.
    async fn server(response: Option<&'static str>) -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 1024];
                    let _ = stream.read(&mut request).await;
                    match response {
                        Some(response) => {
                            let _ = stream.write_all(response.as_bytes()).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        address
    }

    /// A loopback port nobody listens on.
    async fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        listener.local_addr().unwrap()
    }

    #[tokio::test]
    async fn http_probes_pass_on_2xx_and_3xx_only() {
        let ok = server(Some("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")).await;
        assert_eq!(http_get(ok, "/health").await, Ok(()));
        let moved = server(Some(
            "HTTP/1.1 302 Found\r\nlocation: /x\r\ncontent-length: 0\r\n\r\n",
        ))
        .await;
        assert_eq!(http_get(moved, "/").await, Ok(()));
        let broken = server(Some(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
        ))
        .await;
        let err = http_get(broken, "/health").await.unwrap_err();
        assert!(err.contains("503") && err.contains("/health"), "{err}");
        let garbage = server(Some("not http at all\r\n\r\n")).await;
        assert!(http_get(garbage, "/").await.is_err());
        let refused = http_get(closed_port().await, "/").await.unwrap_err();
        assert!(refused.to_lowercase().contains("refused"), "{refused}");
    }

    #[tokio::test]
    async fn a_silent_http_server_is_cut_by_the_attempt_timeout() {
        let silent = server(None).await;
        let script_target = HttpOnce(silent);
        let result = wait_until_healthy(
            &HealthCheck {
                probe: None,
                interval_ms: 100,
                min_healthy_ms: 0,
                deadline_ms: 300,
            },
            &script_target,
        )
        .await;
        assert!(
            matches!(&result, Err(Unhealthy::Deadline { last, .. }) if last == "no answer within 100ms"),
            "{result:?}"
        );
    }

    /// Probes a real HTTP server on loopback, to show a hanging server does not hang the wait.
    struct HttpOnce(SocketAddr);

    impl Target for HttpOnce {
        async fn status(&self) -> Result<ContainerStatus, RuntimeError> {
            Ok(ContainerStatus {
                ip_address: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                ..running()
            })
        }

        async fn probe(&self, status: &ContainerStatus) -> Result<(), String> {
            http_get(address(status, self.0.port())?, "/").await
        }
    }

    #[tokio::test]
    async fn tcp_probes_pass_when_something_listens() {
        let listening = server(None).await;
        assert_eq!(tcp_connect(listening).await, Ok(()));
        let err = tcp_connect(closed_port().await).await.unwrap_err();
        assert!(err.to_lowercase().contains("refused"), "{err}");
        assert!(
            address(&running(), 80)
                .unwrap_err()
                .contains("no IP address")
        );
    }
}
