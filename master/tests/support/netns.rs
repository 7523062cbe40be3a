//! Test hosts with addresses of their own: network namespaces joined by veth pairs to a bridge,
//! with faults to inject on any host's link.
//!
//! Everything lives in namespaces this harness creates: a hub namespace holds the bridge, and
//! each host namespace one end of a veth pair (`eth0`, an address in 198.18.0.0/24, the range
//! set aside for network tests) whose other end is on the bridge. Nothing is added to this
//! machine's own network, no traffic leaves the namespaces, and dropping the [`Network`]
//! deletes them all, also when a test fails.
//!
//! Faults: a link taken down (`ip link set down`), packets dropped silently (`iptables -j
//! DROP`, no reset at all), random loss (iptables' statistic match) and latency (a delaying
//! proxy in the host's namespace: this machine's kernel has no netem).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tempfile::TempDir;

use super::{Registry, UnixForwarder, run_with_deadline};

/// Runs `ip ARGS`, panicking with its output if it fails.
fn ip(args: &[&str]) {
    run_ok("ip", args);
}

fn run_ok(program: &str, args: &[&str]) {
    let what = format!("{program} {}", args.join(" "));
    let finished = run_with_deadline(
        Command::new(program).args(args),
        Duration::from_secs(30),
        &what,
    );
    assert!(finished.code == 0, "{}", finished.describe(&what));
}

/// A bridge in a namespace of its own, to which hosts are attached.
pub struct Network {
    prefix: String,
    hub: String,
    hosts: Vec<String>,
    forwarders: Vec<(Child, UnixForwarder, TempDir)>,
    /// Delaying proxies of [`Network::slow_path`].
    proxies: Vec<Child>,
}

impl Network {
    /// A new, empty network. Its namespaces are named `bnet-<unique>-...`.
    pub fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "bnet-{:x}{:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let hub = format!("{prefix}-hub");
        ip(&["netns", "add", &hub]);
        let network = Self {
            prefix,
            hub,
            hosts: vec![],
            forwarders: vec![],
            proxies: vec![],
        };
        network.in_hub(&["link", "add", "br0", "type", "bridge"]);
        network.in_hub(&["link", "set", "br0", "up"]);
        network.in_hub(&["link", "set", "lo", "up"]);
        network
    }

    fn in_hub(&self, args: &[&str]) {
        let mut all = vec!["-n", self.hub.as_str()];
        all.extend(args);
        ip(&all);
    }

    /// Attaches a new host; the first gets 198.18.0.1, the next .2, and so on.
    pub fn host(&mut self, name: &str) -> NetHost {
        let number = self.hosts.len() + 1;
        let netns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &netns]);
        self.hosts.push(netns.clone());
        let port = format!("h{number}");
        self.in_hub(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        self.in_hub(&["link", "set", &port, "master", "br0"]);
        self.in_hub(&["link", "set", &port, "up"]);
        let address = Ipv4Addr::new(198, 18, 0, u8::try_from(number).expect("at most 254 hosts"));
        let host = NetHost {
            netns,
            hub: self.hub.clone(),
            port,
            address,
        };
        host.ip(&["link", "set", "lo", "up"]);
        host.ip(&["addr", "add", &format!("{address}/24"), "dev", "eth0"]);
        host.ip(&["link", "set", "eth0", "up"]);
        host
    }

    /// Makes `registry` answer on its own loopback address inside `host` too, so an image
    /// reference means the same to a master there as to this machine's Docker engine.
    pub fn forward_registry(&mut self, host: &NetHost, registry: &Registry) {
        let dir = tempfile::Builder::new()
            .prefix("brine-e2e-netns-")
            .tempdir()
            .expect("a temp dir");
        let socket = dir.path().join("registry.sock");
        let target = registry.host();
        let forwarder = UnixForwarder::start(&socket, target.clone());
        let port = target.rsplit(':').next().expect("HOST:PORT");
        let child = Command::new("ip")
            .args(["netns", "exec", &host.netns, "socat"])
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
            .arg(format!("UNIX-CONNECT:{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat (Debian's socat)");
        wait_listening(&host.netns, port);
        self.forwarders.push((child, forwarder, dir));
    }
}

/// Waits until something listens on 127.0.0.1:`port` inside `netns`.
fn wait_listening(netns: &str, port: &str) {
    for _ in 0..100 {
        let listed = run_with_deadline(
            Command::new("ip").args(["netns", "exec", netns, "ss", "-ltn"]),
            Duration::from_secs(10),
            "ss -ltn",
        );
        if listed.stdout.contains(&format!("127.0.0.1:{port}")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on 127.0.0.1:{port} in {netns}");
}

impl Network {
    /// Gives `host` a slow path to `target`: a proxy in the host's namespace, listening on
    /// 127.0.0.1 at `target`'s port, that delays everything it forwards by `one_way` in each
    /// direction. Returns the address to dial instead of `target`. (This machine's kernel has
    /// no netem, so the delay comes from `tests/net/delay_proxy.py`.)
    pub fn slow_path(&mut self, host: &NetHost, target: &str, one_way: Duration) -> String {
        let port = target.rsplit(':').next().expect("HOST:PORT");
        let listen = format!("127.0.0.1:{port}");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/net/delay_proxy.py");
        let child = Command::new("ip")
            .args(["netns", "exec", &host.netns, "python3"])
            .arg(script)
            .args(["--listen", &listen, "--target", target])
            .args(["--delay-ms", &one_way.as_millis().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the delaying proxy");
        wait_listening(&host.netns, port);
        self.proxies.push(child);
        listen
    }
}

impl Default for Network {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for mut proxy in self.proxies.drain(..) {
            let _ = proxy.kill();
            let _ = proxy.wait();
        }
        for (mut child, mut forwarder, _dir) in self.forwarders.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
            forwarder.stop();
        }
        // Deleting a namespace deletes its end of each veth pair, and with it the other end.
        for netns in self.hosts.iter().chain([&self.hub]) {
            let _ = Command::new("ip")
                .args(["netns", "del", netns])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A host on a [`Network`]: a namespace with one interface, `eth0`.
#[derive(Debug, Clone)]
pub struct NetHost {
    netns: String,
    hub: String,
    /// Its veth end on the bridge, in the hub namespace.
    port: String,
    address: Ipv4Addr,
}

impl NetHost {
    pub fn netns(&self) -> &str {
        &self.netns
    }

    pub fn address(&self) -> IpAddr {
        IpAddr::V4(self.address)
    }

    fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.netns.as_str()];
        all.extend(args);
        ip(&all);
    }

    fn exec(&self, program: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", self.netns.as_str(), program];
        all.extend(args);
        ip(&all);
    }

    /// Takes the host's link down at the bridge, as a pulled cable would.
    pub fn cut(&self) {
        ip(&["-n", &self.hub, "link", "set", &self.port, "down"]);
    }

    /// Brings the link back after [`NetHost::cut`].
    pub fn heal(&self) {
        ip(&["-n", &self.hub, "link", "set", &self.port, "up"]);
    }

    /// Drops every packet to and from the host without a word (no reset, no ICMP), as a
    /// firewall or a dead route does.
    pub fn drop_silently(&self) {
        self.exec("iptables", &["-A", "INPUT", "-i", "eth0", "-j", "DROP"]);
        self.exec("iptables", &["-A", "OUTPUT", "-o", "eth0", "-j", "DROP"]);
    }

    /// Lets packets through again after [`NetHost::drop_silently`].
    pub fn stop_dropping(&self) {
        self.exec("iptables", &["-F", "INPUT"]);
        self.exec("iptables", &["-F", "OUTPUT"]);
    }

    /// Loses `percent` of the packets the host sends, at random (iptables' statistic match on
    /// its interface): real loss, which TCP recovers from by retransmitting.
    pub fn lose(&self, percent: u32) {
        let probability = format!("{:.4}", f64::from(percent) / 100.0);
        self.exec(
            "iptables",
            &[
                "-A",
                "OUTPUT",
                "-o",
                "eth0",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &probability,
                "-j",
                "DROP",
            ],
        );
    }
}

/// Whether this machine can make the test network: root, iproute2 and the tools the faults use.
pub fn available() -> Result<(), String> {
    for tool in ["ip", "iptables", "socat", "ss", "python3"] {
        let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
            .iter()
            .any(|dir| Path::new(dir).join(tool).exists());
        if !found {
            return Err(format!(
                "{tool} is missing: scripts/test-deps.sh installs iproute2, iptables and socat"
            ));
        }
    }
    Ok(())
}
