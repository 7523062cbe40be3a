//! What the integration tests share: the real `brine-proxy` binary started with a temporary
//! configuration, a control-socket client, small HTTP backends that answer with their name, and
//! HTTP clients.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brine_common::proxy_control::{ControlRequest, ControlResponse, ProxyMode, Route};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::Notify;

pub const BIN: &str = env!("CARGO_BIN_EXE_brine-proxy");

/// A `brine-proxy run` process with its files in a directory of its own.
pub struct ProxyProcess {
    pub child: Child,
    pub control: PathBuf,
    pub state: PathBuf,
    pub config: PathBuf,
    log: PathBuf,
}

/// Writes a configuration in `dir` (control socket, state file, short timeouts).
pub fn write_config(dir: &Path) -> PathBuf {
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "control_socket = \"{}\"\nstate_file = \"{}\"\nconnect_timeout = \"1s\"\nstop_drain = \"2s\"\n",
            dir.join("control.sock").display(),
            dir.join("routes.json").display()
        ),
    )
    .expect("write the configuration");
    config
}

impl ProxyProcess {
    /// Starts the proxy with its files in `dir` and waits until its control socket answers.
    pub async fn start(dir: &Path) -> Self {
        let config = write_config(dir);
        let log = dir.join(format!("proxy-{}.log", std::process::id()));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the log");
        let child = Command::new(BIN)
            .args(["--log-format", "plain", "run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "brine_proxy=debug,info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start brine-proxy");
        let proxy = Self {
            child,
            control: dir.join("control.sock"),
            state: dir.join("routes.json"),
            config,
            log,
        };
        proxy.wait_ready().await;
        proxy
    }

    pub async fn wait_ready(&self) {
        wait_for_socket(&self.control, &self.log).await;
    }

    pub async fn control(&self) -> Control {
        Control::connect(&self.control).await
    }

    /// What the proxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        terminate(&mut self.child)
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to `child` and waits for it to exit (at most 10 s).
pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "brine-proxy did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a unix socket at `path` accepts connections (at most 10 s).
pub async fn wait_for_socket(path: &Path, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(path).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the control socket {} never answered; log:\n{}",
            path.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client of the control socket.
pub struct Control {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Control {
    pub async fn connect(path: &Path) -> Self {
        let (reader, writer) = UnixStream::connect(path)
            .await
            .expect("connect to the control socket")
            .into_split();
        Self {
            reader: BufReader::new(reader),
            writer,
        }
    }

    /// Sends `line` (a newline is added) and reads the answer; `None` if the proxy closed the
    /// connection instead.
    pub async fn raw(&mut self, line: &str) -> Option<ControlResponse> {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .await
            .ok()?;
        self.read().await
    }

    pub async fn read(&mut self) -> Option<ControlResponse> {
        let mut answer = String::new();
        let read =
            tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut answer))
                .await
                .expect("an answer within 10s");
        match read {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&answer).expect("a JSON answer")),
        }
    }

    pub async fn send(&mut self, request: &ControlRequest) -> ControlResponse {
        let line = serde_json::to_string(request).expect("serializes");
        self.raw(&line).await.expect("an answer")
    }

    pub async fn route(
        &mut self,
        listen: SocketAddr,
        backend: SocketAddr,
        mode: ProxyMode,
    ) -> ControlResponse {
        self.send(&ControlRequest::Route {
            route: Route {
                listen,
                backend,
                mode,
                owner: "test/web".into(),
            },
        })
        .await
    }

    pub async fn drain(
        &mut self,
        listen: SocketAddr,
        backend: SocketAddr,
        timeout_ms: u64,
    ) -> ControlResponse {
        self.send(&ControlRequest::Drain {
            listen,
            backend,
            timeout_ms,
        })
        .await
    }
}

/// An address on 127.0.0.1 nobody listens on (now).
pub fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

type Body = BoxBody<Bytes, Infallible>;

/// A small HTTP/1.1 backend that answers with its name: `/` at once, `/slow/MS` after MS
/// milliseconds, `/stream` in two chunks, the second once [`Backend::gate`] is notified, and
/// `/echo` with `Upgrade: echo` by echoing the upgraded connection.
pub struct Backend {
    pub address: SocketAddr,
    pub name: String,
    pub gate: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let gate = Arc::new(Notify::new());
        let task = {
            let (name, gate) = (name.to_owned(), Arc::clone(&gate));
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let (name, gate) = (name.clone(), Arc::clone(&gate));
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            answer(name.clone(), Arc::clone(&gate), request)
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .with_upgrades()
                            .await;
                    });
                }
            })
        };
        Self {
            address,
            name: name.to_owned(),
            gate,
            task,
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    name: String,
    gate: Arc<Notify>,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_owned();
    if path == "/echo" && request.headers().contains_key("upgrade") {
        // An upgraded connection that echoes what it reads.
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut reader, &mut writer).await;
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::new(Bytes::new()).boxed())
            .expect("a response"));
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if path == "/stream" {
        let first = futures::stream::once(async { Ok(Frame::data(Bytes::from("first\n"))) });
        let second = futures::stream::once(async move {
            gate.notified().await;
            Ok(Frame::data(Bytes::from("second\n")))
        });
        let body = http_body_util::StreamBody::new(futures::StreamExt::chain(first, second));
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .body(BodyExt::boxed(body))
            .expect("a response"));
    }
    let forwarded = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Ok(Response::builder()
        .header("x-seen-forwarded-for", forwarded)
        .body(Full::new(Bytes::from(name)).boxed())
        .expect("a response"))
}

/// An HTTP/1.1 connection kept alive across requests.
pub struct KeptAlive {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl KeptAlive {
    pub async fn connect(address: SocketAddr) -> Result<Self, String> {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    /// The response's head, with its body still to read.
    pub async fn send(&mut self, path: &str) -> Result<Response<Incoming>, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection closed: {e}"))?;
        let request = Request::get(path)
            .header("host", "proxy.test")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        self.sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))
    }

    /// The status and whole body of `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<(StatusCode, String), String> {
        let response = self.send(path).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

/// `GET path` on a connection of its own.
pub async fn get_once(address: SocketAddr, path: &str) -> Result<(StatusCode, String), String> {
    KeptAlive::connect(address).await?.get(path).await
}

/// Reads the next data frame of a body.
pub async fn next_chunk(body: &mut Incoming) -> Option<String> {
    loop {
        let frame = body.frame().await?.ok()?;
        if let Ok(data) = frame.into_data() {
            return Some(String::from_utf8_lossy(&data).into_owned());
        }
    }
}
