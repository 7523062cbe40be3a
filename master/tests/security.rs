//! Security of the master's gRPC surface, in-process: enrolment with join tokens, mutual TLS,
//! and the role checks that stand between a certificate and each RPC. Every test here fails if
//! the attack it describes works, and checks that the refusal explains itself.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use brine_common::identity::{CertRole, identity_from_der};
use brine_common::names::MinionId;
use brine_common::token::{JoinToken, sha256_hex};
use brine_daemon::config::Overrides;
use brine_master::cli::cert::Issue;
use brine_master::config::MasterConfig;
use brine_master::data_dir::DataDir;
use brine_minion::config::DataDir as MinionDataDir;
use brine_minion::enrol::{JoinRequest, join};
use brine_proto::pb;
use brine_proto::tls::{
    ClientIdentity, MasterTrust, TlsError, certs_from_pem, client_config, connect,
    install_crypto_provider,
};
use rustls::pki_types::CertificateDer;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The longest any single step may take before the test gives up instead of hanging.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// The connect timeout handed to `brine_proto::tls::connect`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`STEP_TIMEOUT`].
async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(STEP_TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP_TIMEOUT:?}"))
}

/// Asserts that an RPC was refused with `code` and a message mentioning `needle`.
#[track_caller]
fn expect_refused<T>(what: &str, result: Result<T, Status>, code: Code, needle: &str) {
    let status = match result {
        Ok(_) => panic!("{what}: the call succeeded; expected {code:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "{what}: {status:?}");
    assert!(
        status.message().contains(needle),
        "{what}: the message should mention {needle:?}: {:?}",
        status.message()
    );
}

/// A freshly initialised master data directory (a new CA), in a temporary directory.
fn init_master_dir() -> (TempDir, DataDir) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let data = DataDir::new(dir.path().join("master"));
    let listen = "127.0.0.1:0".parse().expect("a socket address");
    let ca = data.fleet_ca(false).expect("a new CA");
    data.init(
        &ca,
        &["localhost".into(), "127.0.0.1".into()],
        listen,
        None,
        None,
    )
    .expect("initialise the master's data directory");
    (dir, data)
}

/// The CA certificate of a master data directory.
fn ca_der(data: &DataDir) -> CertificateDer<'static> {
    let pem = std::fs::read(data.ca_cert()).expect("read the master's ca.pem");
    certs_from_pem("ca.pem", &pem)
        .expect("ca.pem holds a certificate")
        .remove(0)
}

/// A client identity from a PEM certificate and key on disk.
fn identity_from_files(cert: &Path, key: &Path) -> ClientIdentity {
    ClientIdentity::from_pem(
        &cert.display().to_string(),
        &std::fs::read(cert).expect("read the client certificate"),
        &key.display().to_string(),
        &std::fs::read(key).expect("read the client key"),
    )
    .expect("load the client identity")
}

/// The admin identity `init` wrote into a master data directory.
fn admin_identity(data: &DataDir) -> ClientIdentity {
    identity_from_files(&data.admin_cert(), &data.admin_key())
}

/// An empty place for a minion's data directory (not created yet, as on a fresh host).
fn minion_dir() -> (TempDir, MinionDataDir) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let data = MinionDataDir::new(dir.path().join("minion"));
    (dir, data)
}

/// Asserts that a failed join left no identity behind.
#[track_caller]
fn assert_nothing_written(data: &MinionDataDir) {
    assert!(
        !data.cert().exists(),
        "{} exists after a refused join",
        data.cert().display()
    );
    assert!(
        !data.key().exists(),
        "{} exists after a refused join",
        data.key().display()
    );
}

/// A master serving in-process on a `127.0.0.1:0` listener.
struct TestMaster {
    _dir: TempDir,
    data: DataDir,
    address: String,
    stop: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

impl TestMaster {
    async fn start() -> Self {
        Self::start_with(("", "")).await
    }

    /// Starts a master whose master.toml has `from` replaced by `to`.
    async fn start_with((from, to): (&str, &str)) -> Self {
        install_crypto_provider();
        let (dir, data) = init_master_dir();
        let text = std::fs::read_to_string(data.config()).expect("read master.toml");
        assert!(text.contains(from), "master.toml has no {from:?}");
        std::fs::write(data.config(), text.replacen(from, to, 1)).expect("write master.toml");
        let config =
            MasterConfig::load_with(data.root(), &Overrides::default()).expect("load master.toml");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let port = listener
            .local_addr()
            .expect("the listener's address")
            .port();
        let address = format!("127.0.0.1:{port}");
        let stop = CancellationToken::new();
        let server = tokio::spawn(brine_master::server::run(
            config,
            listener,
            stop.clone().cancelled_owned(),
        ));
        Self {
            _dir: dir,
            data,
            address,
            stop,
            server,
        }
    }

    fn ca(&self) -> CertificateDer<'static> {
        ca_der(&self.data)
    }

    /// Opens a channel trusting `trust`, presenting `identity`.
    async fn channel(
        &self,
        trust: MasterTrust,
        identity: Option<ClientIdentity>,
    ) -> Result<Channel, TlsError> {
        let config = client_config(trust, identity).expect("build the client TLS configuration");
        within("connect", connect(&self.address, config, CONNECT_TIMEOUT)).await
    }

    /// Opens a channel that trusts this master's CA; the connection must succeed.
    async fn trusted_channel(&self, identity: Option<ClientIdentity>) -> Channel {
        self.channel(MasterTrust::Ca(self.ca()), identity)
            .await
            .unwrap_or_else(|err| panic!("connect to the master: {err}"))
    }

    async fn fleet(
        &self,
        identity: Option<ClientIdentity>,
    ) -> pb::fleet_service_client::FleetServiceClient<Channel> {
        pb::fleet_service_client::FleetServiceClient::new(self.trusted_channel(identity).await)
    }

    async fn admin(&self) -> pb::fleet_service_client::FleetServiceClient<Channel> {
        self.fleet(Some(admin_identity(&self.data))).await
    }

    /// `CreateJoinToken` as the admin; it must succeed.
    async fn create_token(
        &self,
        request: pb::CreateJoinTokenRequest,
    ) -> pb::CreateJoinTokenResponse {
        within(
            "create_join_token",
            self.admin().await.create_join_token(request),
        )
        .await
        .unwrap_or_else(|status| panic!("the admin could not create a join token: {status:?}"))
        .into_inner()
    }

    /// A join token created by the admin through `CreateJoinToken`.
    async fn join_token(&self, ttl_seconds: u64) -> JoinToken {
        self.create_token(pb::CreateJoinTokenRequest {
            ttl: (ttl_seconds > 0).then(|| prost_types::Duration {
                seconds: i64::try_from(ttl_seconds).expect("a short ttl"),
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .token
        .parse()
        .unwrap_or_else(|err| panic!("the master created an unreadable token: {err}"))
    }

    /// Accepts a waiting host (or the machine waiting to replace it) as the admin.
    async fn accept(&self, id: &str) {
        within(
            "accept",
            self.admin().await.accept_minion(pb::AcceptMinionRequest {
                minion_id: id.into(),
            }),
        )
        .await
        .unwrap_or_else(|status| panic!("the admin could not accept {id}: {status:?}"));
    }

    /// A token that re-enrols `id` only (`token create --replace ID`).
    async fn replacing_token(&self, id: &str) -> JoinToken {
        self.create_token(pb::CreateJoinTokenRequest {
            replaces_minion_id: id.into(),
            ..Default::default()
        })
        .await
        .token
        .parse()
        .expect("a readable token")
    }

    /// Runs `brine-minion join` against this master.
    async fn enrol(&self, data: &MinionDataDir, token: JoinToken, id: &str) -> anyhow::Result<()> {
        let request = JoinRequest {
            master: self.address.clone(),
            token,
            id: MinionId::new(id).expect("a valid minion id"),
            namespace: String::new(),
            labels: Default::default(),
            source_address: None,
        };
        within("join", join(data, request)).await
    }

    /// Enrols a minion with a fresh token; the join must succeed.
    async fn enrolled_minion(&self, id: &str) -> (TempDir, MinionDataDir) {
        let (dir, data) = minion_dir();
        let token = self.join_token(0).await;
        self.enrol(&data, token, id)
            .await
            .unwrap_or_else(|err| panic!("enrol {id}: {err:#}"));
        (dir, data)
    }

    /// The enrolled minion's certificate and key as a client identity.
    fn minion_identity(data: &MinionDataDir) -> ClientIdentity {
        identity_from_files(&data.cert(), &data.key())
    }

    /// Every enrolled minion, as the admin sees it.
    async fn minions(&self) -> Vec<pb::MinionInfo> {
        within(
            "list_minions",
            self.admin()
                .await
                .list_minions(pb::ListMinionsRequest::default()),
        )
        .await
        .unwrap_or_else(|status| panic!("the admin could not list the minions: {status:?}"))
        .into_inner()
        .minions
    }

    async fn minion_ids(&self) -> Vec<String> {
        self.minions()
            .await
            .into_iter()
            .map(|m| m.minion_id)
            .collect()
    }

    async fn shutdown(self) {
        self.stop.cancel();
        within("master shutdown", self.server)
            .await
            .expect("the master's task panicked")
            .unwrap_or_else(|err| panic!("the master failed: {err:#}"));
    }

    /// Stops the master and starts it again on the same data directory (on a new port).
    async fn restart(self) -> Self {
        self.stop.cancel();
        within("master shutdown", self.server)
            .await
            .expect("the master's task panicked")
            .unwrap_or_else(|err| panic!("the master failed: {err:#}"));
        let config = MasterConfig::load_with(self.data.root(), &Overrides::default())
            .expect("load master.toml");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let address = listener
            .local_addr()
            .expect("the listener's address")
            .to_string();
        let stop = CancellationToken::new();
        let server = tokio::spawn(brine_master::server::run(
            config,
            listener,
            stop.clone().cancelled_owned(),
        ));
        Self {
            _dir: self._dir,
            data: self.data,
            address,
            stop,
            server,
        }
    }

    /// Issues a `role` certificate for `name` into a new directory, as `cert issue` does.
    fn operator_identity(&self, role: CertRole, name: &str) -> (TempDir, ClientIdentity) {
        let dir = tempfile::tempdir().expect("a temp dir");
        brine_master::cli::cert::issue(
            &self.data,
            Issue {
                role,
                name,
                out: dir.path(),
                address: None,
                context_name: None,
            },
        )
        .expect("issue a certificate");
        let identity = identity_from_files(
            &dir.path().join(format!("{name}.pem")),
            &dir.path().join(format!("{name}.key")),
        );
        (dir, identity)
    }

    /// A fleet client for each caller an admin-only call must refuse: a CI pipeline, a host,
    /// and no certificate at all; each with what its refusal says.
    async fn outsiders(&self) -> (Vec<TempDir>, Vec<Outsider>) {
        let (ci_dir, ci) = self.operator_identity(CertRole::Ci, "pipeline");
        let (host_dir, minion) = self.enrolled_minion("web-1").await;
        let outsiders = vec![
            Outsider {
                who: "with a ci certificate",
                fleet: self.fleet(Some(ci)).await,
                code: Code::PermissionDenied,
                needle: "ci role",
            },
            Outsider {
                who: "with a minion certificate",
                fleet: self.fleet(Some(TestMaster::minion_identity(&minion))).await,
                code: Code::PermissionDenied,
                needle: "minion role",
            },
            Outsider {
                who: "without a certificate",
                fleet: self.fleet(None).await,
                code: Code::Unauthenticated,
                needle: "client certificate",
            },
        ];
        (vec![ci_dir, host_dir], outsiders)
    }
}

/// A caller an admin-only call refuses, and how.
struct Outsider {
    who: &'static str,
    fleet: pb::fleet_service_client::FleetServiceClient<Channel>,
    code: Code,
    needle: &'static str,
}

/// SHA-256 of the certificate in a PEM file, as the master lists it.
fn fingerprint(cert: &Path) -> String {
    let pem = std::fs::read(cert).expect("read the certificate");
    sha256_hex(&certs_from_pem("certificate", &pem).expect("a certificate")[0])
}

/// A stream that opens a minion link the way a minion does: one `Hello`.
/// The first message a minion sends.
fn hello() -> pb::ConnectRequest {
    pb::ConnectRequest {
        kind: Some(pb::connect_request::Kind::Hello(pb::Hello {
            version: "test".into(),
            ..Default::default()
        })),
    }
}

fn hello_stream() -> impl tonic::IntoStreamingRequest<Message = pb::ConnectRequest> {
    tokio_stream::iter(vec![hello()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_enrols_with_a_token_and_its_certificate_says_who_it_is() {
    let master = TestMaster::start().await;
    let (_dir, minion) = master.enrolled_minion("web-1").await;

    let cert_pem = std::fs::read(minion.cert()).unwrap();
    let cert = certs_from_pem("minion.pem", &cert_pem).unwrap().remove(0);
    let identity = identity_from_der(&cert).unwrap();
    assert_eq!(identity.name, "web-1");
    assert_eq!(identity.role, CertRole::Minion);

    let key_mode = std::fs::metadata(minion.key())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600, "mode of {}", minion.key().display());

    assert_eq!(
        std::fs::read_to_string(minion.ca_cert()).unwrap(),
        std::fs::read_to_string(master.data.ca_cert()).unwrap(),
        "the minion's ca.pem is the master's CA"
    );

    let minions = master.minions().await;
    let entry = minions
        .iter()
        .find(|m| m.minion_id == "web-1")
        .unwrap_or_else(|| panic!("web-1 is not listed: {minions:?}"));
    assert_eq!(
        entry.certificate_sha256,
        sha256_hex(&cert),
        "the master records the fingerprint of the certificate the host holds"
    );
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_pinning_another_ca_is_refused_by_the_joining_host() {
    let master = TestMaster::start().await;
    let (_other_dir, other) = init_master_dir();
    let real = master.join_token(0).await;
    let forged = JoinToken {
        ca_digest: other.load_ca().unwrap().digest().to_owned(),
        secret: real.secret.clone(),
    };
    assert_ne!(forged.ca_digest, real.ca_digest);

    let (_dir, minion) = minion_dir();
    let err = master.enrol(&minion, forged, "web-1").await.unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("does not match the digest in the join token"),
        "the error should name the CA digest mismatch: {message}"
    );
    assert_nothing_written(&minion);
    assert!(master.minion_ids().await.is_empty(), "nothing was enrolled");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_expired_tokens_are_refused() {
    let master = TestMaster::start().await;
    let digest = sha256_hex(&master.ca());

    let made_up = JoinToken {
        ca_digest: digest,
        secret: "0123456789abcdef".repeat(3),
    };
    let (_dir, minion) = minion_dir();
    let err = master.enrol(&minion, made_up, "web-1").await.unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("unknown token"),
        "a made-up secret: {message}"
    );
    assert_nothing_written(&minion);

    let short_lived = master.join_token(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_dir, minion) = minion_dir();
    let err = master
        .enrol(&minion, short_lived, "web-2")
        .await
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("expired"), "an expired token: {message}");
    assert_nothing_written(&minion);

    assert!(master.minion_ids().await.is_empty(), "nothing was enrolled");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused() {
    let master = TestMaster::start().await;
    let channel = master.trusted_channel(None).await;
    let mut fleet = pb::fleet_service_client::FleetServiceClient::new(channel.clone());

    let result = within(
        "list_minions",
        fleet.list_minions(pb::ListMinionsRequest::default()),
    )
    .await;
    expect_refused(
        "ListMinions without a certificate",
        result,
        Code::Unauthenticated,
        "client certificate",
    );

    let result = within(
        "highstate",
        fleet.highstate(pb::HighstateRequest::default()),
    )
    .await;
    expect_refused(
        "Highstate without a certificate",
        result,
        Code::Unauthenticated,
        "client certificate",
    );

    let result = within(
        "create_join_token",
        fleet.create_join_token(pb::CreateJoinTokenRequest::default()),
    )
    .await;
    expect_refused(
        "CreateJoinToken without a certificate",
        result,
        Code::Unauthenticated,
        "client certificate",
    );

    for (what, result) in [
        (
            "Exec without a certificate",
            within("exec", fleet.exec(exec_request("web-1", &["id"])))
                .await
                .map(|_| ()),
        ),
        (
            "ContainerLogs without a certificate",
            within(
                "container_logs",
                fleet.container_logs(pb::ContainerLogsRequest::default()),
            )
            .await
            .map(|_| ()),
        ),
    ] {
        expect_refused(what, result, Code::Unauthenticated, "client certificate");
    }

    let mut link = pb::minion_link_service_client::MinionLinkServiceClient::new(channel);
    let result = within("connect", link.connect(hello_stream())).await;
    expect_refused(
        "MinionLink.Connect without a certificate",
        result,
        Code::Unauthenticated,
        "client certificate",
    );
    drop((fleet, link));
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused() {
    let master = TestMaster::start().await;
    let (_other_dir, other) = init_master_dir();
    // The other fleet's admin: same name, same role, wrong CA.
    // Its signature does not verify with the master's CA key.
    assert_refused_identity(
        &master,
        admin_identity(&other),
        "a foreign certificate",
        "DecryptError",
    )
    .await;
    master.shutdown().await;
}

/// Asserts that a caller presenting `identity` gets nothing from the master: the master
/// refuses its certificate with the TLS alert `reason`, a gRPC call with it fails, and nothing
/// is recorded.
async fn assert_refused_identity(
    master: &TestMaster,
    identity: ClientIdentity,
    what: &str,
    reason: &str,
) {
    let refusal = tls_refusal(master, identity.clone()).await;
    assert!(
        refusal.contains(&format!("received fatal alert: {reason}")),
        "{what} must be refused with the TLS alert {reason}: {refusal}"
    );
    // Through gRPC the same refusal may surface as the alert or as a closed connection,
    // whichever the client's HTTP/2 layer reads first; either way nothing is answered.
    if let Ok(channel) = master
        .channel(MasterTrust::Ca(master.ca()), Some(identity))
        .await
    {
        let mut fleet = pb::fleet_service_client::FleetServiceClient::new(channel);
        let result = within(
            "list_minions",
            fleet.list_minions(pb::ListMinionsRequest::default()),
        )
        .await;
        if let Ok(response) = result {
            panic!("{what} listed the minions: {:?}", response.into_inner());
        }
    }
    assert!(master.minion_ids().await.is_empty());
}

/// What the master answers a TLS client presenting `identity`, read off the connection: with
/// TLS 1.3 the client's side of the handshake ends before the master has checked the
/// certificate, so a refusal arrives as an alert on the first read.
async fn tls_refusal(master: &TestMaster, identity: ClientIdentity) -> String {
    use tokio::io::AsyncReadExt;
    let config = client_config(MasterTrust::Ca(master.ca()), Some(identity))
        .expect("a client configuration");
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let server_name = rustls::pki_types::ServerName::try_from("localhost").expect("a server name");
    let tcp = within("connect", tokio::net::TcpStream::connect(&master.address))
        .await
        .expect("a TCP connection");
    match within("handshake", connector.connect(server_name, tcp)).await {
        Err(err) => err.to_string(),
        Ok(mut tls) => {
            let mut first = [0u8; 1];
            match within("read", tls.read(&mut first)).await {
                Err(err) => err.to_string(),
                Ok(read) => format!("not refused: the master sent {read} bytes"),
            }
        }
    }
}

/// A certificate and key with the admin role, signed by `issuer`'s key, valid `from`..`until`.
fn admin_certificate(
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    from: time::OffsetDateTime,
    until: time::OffsetDateTime,
) -> ClientIdentity {
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut params = rcgen::CertificateParams::default();
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, "admin");
    subject.push(rcgen::DnType::OrganizationalUnitName, "admin");
    params.distinguished_name = subject;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = from;
    params.not_after = until;
    let cert = params
        .signed_by(&key, issuer)
        .expect("sign the certificate");
    ClientIdentity::from_pem(
        "cert",
        cert.pem().as_bytes(),
        "key",
        key.serialize_pem().as_bytes(),
    )
    .expect("a client identity")
}

#[tokio::test]
async fn self_signed_and_expired_certificates_are_refused() {
    let master = TestMaster::start().await;
    let now = time::OffsetDateTime::now_utc();
    let year = time::Duration::days(365);

    // Claims the admin role, signed by itself.
    let own_key = rcgen::KeyPair::generate().expect("a key");
    let mut own = rcgen::CertificateParams::default();
    own.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let self_issuer = rcgen::Issuer::new(own, own_key);
    let self_signed = admin_certificate(&self_issuer, now - year, now + year);
    assert_refused_identity(
        &master,
        self_signed,
        "a self-signed certificate",
        "UnknownCA",
    )
    .await;

    // Signed by the master's own CA, but expired yesterday.
    let ca_key = rcgen::KeyPair::from_pem(
        &std::fs::read_to_string(master.data.ca_key()).expect("read ca.key"),
    )
    .expect("the CA key");
    let ca_pem = std::fs::read_to_string(master.data.ca_cert()).expect("read ca.pem");
    let ca = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("the CA");
    let expired = admin_certificate(&ca, now - year, now - time::Duration::days(1));
    assert_refused_identity(
        &master,
        expired,
        "an expired certificate",
        "CertificateExpired",
    )
    .await;

    // The same, still valid, is accepted: the refusals above are about signer and time.
    let valid = admin_certificate(&ca, now - year, now + year);
    let mut fleet = master.fleet(Some(valid)).await;
    within(
        "list_minions",
        fleet.list_minions(pb::ListMinionsRequest::default()),
    )
    .await
    .expect("a valid certificate from the CA is served");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minion_certificate_cannot_call_fleet() {
    let master = TestMaster::start().await;
    let (_dir, minion) = master.enrolled_minion("web-1").await;
    let mut fleet = master
        .fleet(Some(TestMaster::minion_identity(&minion)))
        .await;

    let result = within(
        "list_minions",
        fleet.list_minions(pb::ListMinionsRequest::default()),
    )
    .await;
    expect_refused(
        "ListMinions with a minion certificate",
        result,
        Code::PermissionDenied,
        "minion role",
    );

    let result = within(
        "highstate",
        fleet.highstate(pb::HighstateRequest::default()),
    )
    .await;
    expect_refused(
        "Highstate with a minion certificate",
        result,
        Code::PermissionDenied,
        "minion role",
    );

    let result = within(
        "deploy",
        fleet.deploy(pb::DeployRequest {
            roles: vec!["web".into()],
            image: "127.0.0.1:5000/app:tested".into(),
            ..Default::default()
        }),
    )
    .await;
    expect_refused(
        "Deploy with a minion certificate",
        result,
        Code::PermissionDenied,
        "minion role",
    );
    for (what, result) in [
        (
            "Rollback",
            within("rollback", fleet.rollback(pb::RollbackRequest::default()))
                .await
                .map(|_| ()),
        ),
        (
            "AcquireLock",
            within(
                "acquire_lock",
                fleet.acquire_lock(pb::AcquireLockRequest::default()),
            )
            .await
            .map(|_| ()),
        ),
        (
            "ListJobs",
            within("list_jobs", fleet.list_jobs(pb::ListJobsRequest::default()))
                .await
                .map(|_| ()),
        ),
        (
            "Exec",
            within("exec", fleet.exec(exec_request("web-1", &["id"])))
                .await
                .map(|_| ()),
        ),
        (
            "ContainerLogs",
            within(
                "container_logs",
                fleet.container_logs(pb::ContainerLogsRequest::default()),
            )
            .await
            .map(|_| ()),
        ),
    ] {
        expect_refused(what, result, Code::PermissionDenied, "minion role");
    }

    let result = within(
        "create_join_token",
        fleet.create_join_token(pb::CreateJoinTokenRequest::default()),
    )
    .await;
    expect_refused(
        "CreateJoinToken with a minion certificate",
        result,
        Code::PermissionDenied,
        "minion role",
    );
    drop(fleet);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_certificate_cannot_pose_as_a_minion_link() {
    let master = TestMaster::start().await;
    let channel = master
        .trusted_channel(Some(admin_identity(&master.data)))
        .await;
    let mut link = pb::minion_link_service_client::MinionLinkServiceClient::new(channel);
    let result = within("connect", link.connect(hello_stream())).await;
    expect_refused(
        "MinionLink.Connect with the admin certificate",
        result,
        Code::PermissionDenied,
        "admin role",
    );
    drop(link);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refuses_a_server_without_the_master_role() {
    let master = TestMaster::start().await;
    // Trusting the right CA: the master is accepted.
    assert!(master.minion_ids().await.is_empty());

    // Trusting another CA (a minion of another fleet): the master is refused before anything is
    // sent.
    let (_other_dir, other) = init_master_dir();
    let err = master
        .channel(MasterTrust::Ca(ca_der(&other)), None)
        .await
        .map(|_| ())
        .expect_err("a client that trusts another CA connected to the master");
    let message = err.to_string();
    eprintln!("connecting to an untrusted master failed: {message}");
    assert!(
        message.contains("certificate"),
        "the error should mention the certificate: {message}"
    );
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rpc_input_gets_invalid_argument_naming_the_field() {
    let master = TestMaster::start().await;

    let result = within(
        "highstate",
        master.admin().await.highstate(pb::HighstateRequest {
            options: Some(pb::JobOptions {
                target: "[".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    )
    .await;
    expect_refused(
        "Highstate with target \"[\"",
        result,
        Code::InvalidArgument,
        "target",
    );
    use pb::rollout::BatchSize;
    for (batch, wait_seconds, concurrent_pulls, field) in [
        (BatchSize::BatchHosts(0), 0, None, "rollout.batch_hosts"),
        (
            BatchSize::BatchPercent(101),
            0,
            None,
            "rollout.batch_percent",
        ),
        (BatchSize::BatchHosts(1), 3_601, None, "rollout.batch_wait"),
        (
            BatchSize::BatchHosts(1),
            0,
            Some(1_001),
            "rollout.concurrent_pulls",
        ),
    ] {
        let result = within(
            "highstate",
            master.admin().await.highstate(pb::HighstateRequest {
                options: Some(pb::JobOptions {
                    rollout: Some(pb::Rollout {
                        batch_size: Some(batch),
                        batch_wait: Some(prost_types::Duration {
                            seconds: wait_seconds,
                            nanos: 0,
                        }),
                        concurrent_pulls,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        )
        .await;
        expect_refused(
            "Highstate with a bad rollout",
            result,
            Code::InvalidArgument,
            field,
        );
    }

    let token = master.join_token(0).await.to_string();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr_pem = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let mut enrolment = pb::enrolment_service_client::EnrolmentServiceClient::new(
        master.trusted_channel(None).await,
    );

    let result = within(
        "join",
        enrolment.join(pb::JoinRequest {
            token: token.clone(),
            csr_pem,
            minion_id: "bad/id".into(),
        }),
    )
    .await;
    expect_refused(
        "Join with minion_id \"bad/id\"",
        result,
        Code::InvalidArgument,
        "minion_id",
    );

    let result = within(
        "join",
        enrolment.join(pb::JoinRequest {
            token,
            csr_pem: "junk".into(),
            minion_id: "web-1".into(),
        }),
    )
    .await;
    expect_refused(
        "Join with csr_pem \"junk\"",
        result,
        Code::InvalidArgument,
        "csr_pem",
    );
    drop(enrolment);

    assert!(master.minion_ids().await.is_empty(), "nothing was enrolled");
    master.shutdown().await;
}

#[tokio::test]
async fn a_second_link_for_the_same_minion_replaces_the_first() {
    install_crypto_provider();
    let master = TestMaster::start().await;
    let (_dir, data) = master.enrolled_minion("web-1").await;

    let (_first_sender, mut first) = open_link(&master, &data).await.expect("the first link");
    let (_second_sender, mut second) = open_link(&master, &data).await.expect("the second link");
    let ended = within("the replaced link to end", first.message()).await;
    assert!(
        matches!(ended, Ok(None) | Err(_)),
        "the first link is still open: {ended:?}"
    );
    let minions = master.minions().await;
    assert!(
        minions
            .iter()
            .any(|m| m.minion_id == "web-1" && m.connected),
        "the second link counts as connected: {minions:?}"
    );
    // The second link is the live one: it has not ended.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), second.message())
            .await
            .is_err(),
        "the replacing link must stay open"
    );
    master.shutdown().await;
}

#[tokio::test]
async fn rapid_failed_joins_are_throttled_and_the_master_stays_responsive() {
    install_crypto_provider();
    let master = TestMaster::start().await;
    let real = master.join_token(0).await;
    let guess = JoinToken {
        ca_digest: real.ca_digest.clone(),
        secret: "0".repeat(40),
    };
    let mut enrolment = pb::enrolment_service_client::EnrolmentServiceClient::new(
        master.trusted_channel(None).await,
    );
    let started = std::time::Instant::now();
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..1000 {
        let result = within(
            "join",
            enrolment.join(pb::JoinRequest {
                token: guess.to_string(),
                csr_pem: "unused".into(),
                minion_id: "guesser".into(),
            }),
        )
        .await;
        let code = result.expect_err("a guessed token must not enrol").code();
        *codes.entry(format!("{code:?}")).or_insert(0) += 1;
    }
    assert_eq!(
        codes.get("Unauthenticated"),
        Some(&10),
        "only the first attempts may reach the token check: {codes:?}"
    );
    assert_eq!(codes.get("ResourceExhausted"), Some(&990), "{codes:?}");
    println!("1000 refused joins in {:?}", started.elapsed());

    // Operators are not affected: their calls are not throttled, from the same address.
    assert!(master.minion_ids().await.is_empty());
    master.shutdown().await;
}

#[tokio::test]
async fn oversized_messages_are_refused_before_they_are_read() {
    install_crypto_provider();
    let master = TestMaster::start().await;
    let token = master.join_token(0).await.to_string();
    let mut enrolment = pb::enrolment_service_client::EnrolmentServiceClient::new(
        master.trusted_channel(None).await,
    );
    let result = within(
        "join",
        enrolment.join(pb::JoinRequest {
            token,
            csr_pem: "x".repeat(1024 * 1024),
            minion_id: "big".into(),
        }),
    )
    .await;
    let status = result.expect_err("a 1 MiB join must be refused");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(master.minion_ids().await.is_empty());
    master.shutdown().await;
}

/// Opens a minion link the way a minion does (a hello first); it stays open while the returned
/// sender lives.
async fn open_link(
    master: &TestMaster,
    data: &MinionDataDir,
) -> Result<
    (
        tokio::sync::mpsc::Sender<pb::ConnectRequest>,
        tonic::Streaming<pb::ConnectResponse>,
    ),
    Status,
> {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender.send(hello()).await.expect("queue the hello");
    let channel = master
        .trusted_channel(Some(TestMaster::minion_identity(data)))
        .await;
    let mut inbound = within(
        "open a link",
        pb::minion_link_service_client::MinionLinkServiceClient::new(channel)
            .connect(tokio_stream::wrappers::ReceiverStream::new(receiver)),
    )
    .await?
    .into_inner();
    // The master's clock comes first on every link.
    let first = within("the master's clock", inbound.message()).await?;
    let Some(pb::ConnectResponse {
        kind: Some(pb::connect_response::Kind::Clock(clock)),
    }) = first
    else {
        panic!("the link must start with the master's clock: {first:?}");
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis();
    let master_now = clock.now.expect("the clock has its time");
    let master_ms =
        i128::from(master_now.seconds) * 1000 + i128::from(master_now.nanos / 1_000_000);
    let off = now.abs_diff(u128::try_from(master_ms).expect("a time after 1970"));
    assert!(
        off < 60_000,
        "the master's clock is {off} ms off: {clock:?}"
    );
    Ok((sender, inbound))
}

#[tokio::test]
async fn a_revoked_host_loses_its_link_and_must_enrol_again() {
    install_crypto_provider();
    let master = TestMaster::start().await;
    let (_dir, data) = master.enrolled_minion("web-1").await;
    let (_sender, mut link) = open_link(&master, &data).await.expect("the link opens");

    let revoked = within(
        "revoke",
        master.admin().await.revoke_minion(pb::RevokeMinionRequest {
            minion_id: "web-1".into(),
        }),
    )
    .await
    .expect("the admin may revoke")
    .into_inner();
    assert!(revoked.disconnected);
    let ended = within("the revoked link to end", link.message()).await;
    assert!(matches!(ended, Ok(None) | Err(_)), "{ended:?}");

    // Its certificate is refused from now on.
    let refused = open_link(&master, &data)
        .await
        .expect_err("a revoked certificate is refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("revoked"), "{refused:?}");
    let listed = master.minions().await;
    assert!(
        listed
            .iter()
            .any(|m| m.minion_id == "web-1" && m.approval == pb::Approval::Revoked as i32),
        "{listed:?}"
    );

    // Enrolling again with a token made to replace it gives a new certificate; the old one
    // stays refused.
    let (_again_dir, again) = minion_dir();
    let token = master.replacing_token("web-1").await;
    master
        .enrol(&again, token, "web-1")
        .await
        .expect("the replacing token re-enrols web-1");
    let (_sender, _link) = open_link(&master, &again)
        .await
        .expect("the new certificate works");
    let old = open_link(&master, &data)
        .await
        .expect_err("the old certificate is refused");
    assert_eq!(old.code(), Code::PermissionDenied, "{old:?}");

    // A CI certificate may not revoke.
    let ci_dir = tempfile::tempdir().expect("a temp dir");
    brine_master::cli::cert::issue(
        &master.data,
        Issue {
            role: CertRole::Ci,
            name: "pipeline",
            out: ci_dir.path(),
            address: None,
            context_name: None,
        },
    )
    .expect("issue a ci certificate");
    let ci = identity_from_files(
        &ci_dir.path().join("pipeline.pem"),
        &ci_dir.path().join("pipeline.key"),
    );
    let result = within(
        "revoke as ci",
        master
            .fleet(Some(ci))
            .await
            .revoke_minion(pb::RevokeMinionRequest {
                minion_id: "web-1".into(),
            }),
    )
    .await;
    expect_refused(
        "RevokeMinion with a ci certificate",
        result,
        Code::PermissionDenied,
        "ci role",
    );
    master.shutdown().await;
}

#[tokio::test]
async fn a_single_use_token_admits_one_host_and_a_revoked_token_none() {
    install_crypto_provider();
    let master = TestMaster::start().await;
    let created = master
        .create_token(pb::CreateJoinTokenRequest {
            max_uses: Some(1),
            ..Default::default()
        })
        .await;
    let token: JoinToken = created.token.parse().expect("a token");

    let (_first_dir, first) = minion_dir();
    master
        .enrol(&first, token.clone(), "web-1")
        .await
        .expect("the first host joins");
    let (_second_dir, second) = minion_dir();
    let err = master
        .enrol(&second, token, "web-2")
        .await
        .expect_err("the token is used up");
    assert!(format!("{err:#}").contains("used up"), "{err:#}");
    assert_nothing_written(&second);

    let listed = within(
        "list tokens",
        master
            .admin()
            .await
            .list_join_tokens(pb::ListJoinTokensRequest::default()),
    )
    .await
    .expect("the admin lists tokens")
    .into_inner()
    .tokens;
    let listed = listed
        .iter()
        .find(|t| t.token_id == created.token_id)
        .expect("the token is listed");
    assert_eq!((listed.uses, listed.uses_left), (1, Some(0)));

    let revocable = master.join_token(0).await;
    within(
        "revoke the token",
        master
            .admin()
            .await
            .revoke_join_token(pb::RevokeJoinTokenRequest {
                token_id: revocable.public_id(),
            }),
    )
    .await
    .expect("the admin revokes a token");
    let (_third_dir, third) = minion_dir();
    let err = master
        .enrol(&third, revocable, "web-3")
        .await
        .expect_err("a revoked token is refused");
    assert!(format!("{err:#}").contains("unknown token"), "{err:#}");
    master.shutdown().await;
}

#[tokio::test]
async fn with_manual_approval_a_joined_host_waits_until_accepted() {
    let master =
        TestMaster::start_with(("join_approval = \"auto\"", "join_approval = \"manual\"")).await;
    let (_dir, data) = master.enrolled_minion("web-1").await;
    let listed = master.minions().await;
    assert_eq!(
        listed[0].approval,
        pb::Approval::Pending as i32,
        "{listed:?}"
    );

    let waiting = open_link(&master, &data)
        .await
        .expect_err("a pending host's link is refused");
    assert_eq!(waiting.code(), Code::PermissionDenied, "{waiting:?}");
    assert!(waiting.message().contains("approval"), "{waiting:?}");

    within(
        "accept",
        master.admin().await.accept_minion(pb::AcceptMinionRequest {
            minion_id: "web-1".into(),
        }),
    )
    .await
    .expect("the admin accepts");
    let (_sender, _link) = open_link(&master, &data)
        .await
        .expect("an accepted host connects");

    within(
        "reject",
        master.admin().await.reject_minion(pb::RejectMinionRequest {
            minion_id: "web-1".into(),
        }),
    )
    .await
    .expect("the admin rejects");
    let rejected = open_link(&master, &data)
        .await
        .expect_err("a rejected host is refused");
    assert!(rejected.message().contains("rejected"), "{rejected:?}");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minion_renews_over_its_open_link_without_a_token() {
    let master = TestMaster::start().await;
    let (_dir, data) = master.enrolled_minion("web-1").await;
    let old = fingerprint(&data.cert());
    let old_dir = tempfile::tempdir().expect("a temp dir");
    let old_data = MinionDataDir::new(old_dir.path());
    std::fs::copy(data.cert(), old_data.cert()).expect("keep the old certificate");
    std::fs::copy(data.key(), old_data.key()).expect("keep the old key");
    let (_sender, mut link) = open_link(&master, &data).await.expect("the link opens");

    let channel = master
        .trusted_channel(Some(TestMaster::minion_identity(&data)))
        .await;
    let id = MinionId::new("web-1").expect("an id");
    let renewed = within("renew", brine_minion::renewal::renew(&data, &id, channel))
        .await
        .unwrap_or_else(|err| panic!("the renewal failed: {err:#}"));
    assert_eq!(renewed.name, "web-1");
    let new = fingerprint(&data.cert());
    assert_ne!(new, old, "a new certificate was installed");

    // The link opened with the old certificate stays up.
    let still_open = tokio::time::timeout(Duration::from_millis(300), link.message()).await;
    assert!(still_open.is_err(), "the link ended: {still_open:?}");
    let listed = master.minions().await;
    assert!(listed[0].connected, "{listed:?}");
    assert_eq!(listed[0].certificate_sha256, new, "{listed:?}");
    assert!(listed[0].certificate_expires_at.is_some(), "{listed:?}");

    // The new certificate connects; once it has, the old one is refused.
    let (_sender, _link) = open_link(&master, &data)
        .await
        .expect("the renewed certificate connects");
    let dir = tempfile::tempdir().expect("a temp dir");
    let old_data = MinionDataDir::new(dir.path());
    master.shutdown().await;
    drop(old_data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_or_revoked_certificate_cannot_renew() {
    let master = TestMaster::start().await;
    let (_old_dir, old) = master.enrolled_minion("web-1").await;
    // The host is rebuilt and enrols again: the first certificate is replaced and may not
    // renew.
    let (_dir, data) = minion_dir();
    master
        .enrol(&data, master.replacing_token("web-1").await, "web-1")
        .await
        .expect("the rebuilt host re-enrols");
    let id = MinionId::new("web-1").expect("an id");
    let renew_with = |data: MinionDataDir| {
        let id = id.clone();
        let master = &master;
        async move {
            let channel = master
                .trusted_channel(Some(TestMaster::minion_identity(&data)))
                .await;
            within("renew", brine_minion::renewal::renew(&data, &id, channel)).await
        }
    };
    let err = renew_with(old.clone())
        .await
        .expect_err("a replaced certificate cannot renew");
    assert!(format!("{err:#}").contains("newer certificate"), "{err:#}");

    within(
        "revoke",
        master.admin().await.revoke_minion(pb::RevokeMinionRequest {
            minion_id: "web-1".into(),
        }),
    )
    .await
    .expect("the admin revokes");
    let before = fingerprint(&data.cert());
    let err = renew_with(data.clone())
        .await
        .expect_err("a revoked host cannot renew");
    assert!(format!("{err:#}").contains("revoked"), "{err:#}");
    assert_eq!(fingerprint(&data.cert()), before, "nothing was installed");

    // Nor can an operator accept it back: it must join again.
    let result = within(
        "accept a revoked host",
        master.admin().await.accept_minion(pb::AcceptMinionRequest {
            minion_id: "web-1".into(),
        }),
    )
    .await;
    expect_refused(
        "AcceptMinion on a revoked host",
        result,
        Code::FailedPrecondition,
        "join again",
    );

    // An admin certificate is not a minion's: it cannot renew.
    let channel = master
        .trusted_channel(Some(admin_identity(&master.data)))
        .await;
    let result = within(
        "renew as admin",
        pb::minion_link_service_client::MinionLinkServiceClient::new(channel)
            .renew(pb::RenewRequest::default()),
    )
    .await;
    expect_refused(
        "Renew with an admin certificate",
        result,
        Code::PermissionDenied,
        "admin role",
    );
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_host_loses_its_link_and_must_join_again() {
    let master = TestMaster::start().await;
    let (_dir, data) = master.enrolled_minion("web-1").await;
    let (_sender, mut link) = open_link(&master, &data).await.expect("the link opens");
    let deleted = within(
        "delete",
        master.admin().await.delete_minion(pb::DeleteMinionRequest {
            minion_id: "web-1".into(),
        }),
    )
    .await
    .expect("the admin deletes")
    .into_inner();
    assert!(deleted.disconnected);
    let ended = within("the deleted link to end", link.message()).await;
    assert!(matches!(ended, Ok(None) | Err(_)), "{ended:?}");
    assert!(master.minion_ids().await.is_empty());
    let refused = open_link(&master, &data)
        .await
        .expect_err("a deleted host's certificate is refused");
    assert!(refused.message().contains("not enrolled"), "{refused:?}");
    let again = within(
        "delete again",
        master.admin().await.delete_minion(pb::DeleteMinionRequest {
            minion_id: "web-1".into(),
        }),
    )
    .await;
    expect_refused(
        "deleting an unknown host",
        again,
        Code::NotFound,
        "no enrolled minion",
    );

    let (_again_dir, again) = master.enrolled_minion("web-1").await;
    open_link(&master, &again)
        .await
        .expect("a host that joined again connects");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_ci_certificate_stays_refused_across_restarts_and_a_new_one_works() {
    let master = TestMaster::start().await;
    let (_ci_dir, ci) = master.operator_identity(CertRole::Ci, "pipeline");
    let list_jobs = |identity: ClientIdentity| {
        let master = &master;
        async move {
            within(
                "list_jobs",
                master
                    .fleet(Some(identity))
                    .await
                    .list_jobs(pb::ListJobsRequest::default()),
            )
            .await
        }
    };
    list_jobs(ci.clone())
        .await
        .expect("a ci certificate may list jobs");

    // CI may neither revoke certificates nor delete or accept hosts.
    let mut as_ci = master.fleet(Some(ci.clone())).await;
    let revoke_as_ci = within(
        "revoke as ci",
        as_ci.revoke_certificate(pb::RevokeCertificateRequest {
            name: "pipeline".into(),
            role: pb::CertificateRole::Ci.into(),
        }),
    )
    .await;
    expect_refused(
        "RevokeCertificate as ci",
        revoke_as_ci,
        Code::PermissionDenied,
        "ci role",
    );
    let delete_as_ci = within(
        "delete as ci",
        as_ci.delete_minion(pb::DeleteMinionRequest {
            minion_id: "web-1".into(),
        }),
    )
    .await;
    expect_refused(
        "DeleteMinion as ci",
        delete_as_ci,
        Code::PermissionDenied,
        "ci role",
    );
    let accept_as_ci = within(
        "accept as ci",
        as_ci.accept_minion(pb::AcceptMinionRequest {
            minion_id: "web-1".into(),
        }),
    )
    .await;
    expect_refused(
        "AcceptMinion as ci",
        accept_as_ci,
        Code::PermissionDenied,
        "ci role",
    );
    drop(as_ci);

    let minion_role = within(
        "revoke a minion role",
        master
            .admin()
            .await
            .revoke_certificate(pb::RevokeCertificateRequest {
                name: "web-1".into(),
                role: pb::CertificateRole::Unspecified.into(),
            }),
    )
    .await;
    expect_refused(
        "RevokeCertificate for a minion",
        minion_role,
        Code::InvalidArgument,
        "RevokeMinion",
    );
    within(
        "revoke",
        master
            .admin()
            .await
            .revoke_certificate(pb::RevokeCertificateRequest {
                name: "pipeline".into(),
                role: pb::CertificateRole::Ci.into(),
            }),
    )
    .await
    .expect("the admin revokes");
    let refused = list_jobs(ci.clone()).await;
    expect_refused(
        "a revoked ci certificate",
        refused,
        Code::Unauthenticated,
        "revoked",
    );
    let master = master.restart().await;
    let refused = within(
        "list_jobs after a restart",
        master
            .fleet(Some(ci))
            .await
            .list_jobs(pb::ListJobsRequest::default()),
    )
    .await;
    expect_refused(
        "a revoked ci certificate after a restart",
        refused,
        Code::Unauthenticated,
        "revoked",
    );

    // Certificates are stamped to the second: a new one, issued after, works.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_new_dir, new_ci) = master.operator_identity(CertRole::Ci, "pipeline");
    within(
        "list_jobs with a new certificate",
        master
            .fleet(Some(new_ci))
            .await
            .list_jobs(pb::ListJobsRequest::default()),
    )
    .await
    .expect("a certificate issued after the revocation works");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_token_labels_reach_the_hosts_that_join_with_it() {
    let master = TestMaster::start().await;
    let mut admin = master.admin().await;
    let bad = within(
        "a token with a bad label",
        admin.create_join_token(pb::CreateJoinTokenRequest {
            labels: [("env".to_owned(), "pro d".to_owned())].into(),
            ..Default::default()
        }),
    )
    .await;
    expect_refused("a bad label", bad, Code::InvalidArgument, "labels");
    let created = within(
        "create a labelled token",
        admin.create_join_token(pb::CreateJoinTokenRequest {
            labels: [("env".to_owned(), "prod".to_owned())].into(),
            ..Default::default()
        }),
    )
    .await
    .expect("the admin creates a token")
    .into_inner();
    let (_dir, data) = minion_dir();
    master
        .enrol(&data, created.token.parse().expect("a token"), "web-1")
        .await
        .expect("the host joins");
    let listed = master.minions().await;
    assert_eq!(
        listed[0].join_labels.get("env").map(String::as_str),
        Some("prod")
    );
    let tokens = within(
        "list tokens",
        admin.list_join_tokens(pb::ListJoinTokensRequest::default()),
    )
    .await
    .expect("the admin lists tokens")
    .into_inner()
    .tokens;
    assert_eq!(
        tokens[0].labels.get("env").map(String::as_str),
        Some("prod")
    );
    master.shutdown().await;
}

/// The leaf certificate the master presents in a fresh TLS handshake.
async fn served_certificate(master: &TestMaster) -> CertificateDer<'static> {
    let config = client_config(MasterTrust::Ca(master.ca()), None).expect("a client config");
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = within(
        "tcp connect",
        tokio::net::TcpStream::connect(&master.address),
    )
    .await
    .expect("connect to the master");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a server name");
    let tls = within("tls handshake", connector.connect(name, tcp))
        .await
        .expect("the handshake succeeds");
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("a server certificate")[0]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_server_certificate_is_served_without_a_restart() {
    let master = TestMaster::start().await;
    let before = served_certificate(&master).await;
    let mut admin = master.admin().await;
    brine_master::server_cert::renew(&master.data, None).expect("renew the certificate");
    let renewed = certs_from_pem(
        "master.pem",
        &std::fs::read(master.data.server_cert()).expect("read master.pem"),
    )
    .expect("a certificate")
    .remove(0);
    assert_ne!(renewed, before);
    let deadline = tokio::time::Instant::now() + brine_master::server_cert::RELOAD_INTERVAL * 3;
    while served_certificate(&master).await != renewed {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the master still serves its old certificate"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Clients trust it as they trusted the old one, and open connections carry on.
    within(
        "list_minions",
        admin.list_minions(pb::ListMinionsRequest::default()),
    )
    .await
    .expect("the open connection still works");
    master.minions().await;
    master.shutdown().await;
}

/// Salt's minion id reuse (CVE-2016-9639): a second join under an enrolled id once replaced
/// the host's certificate, after which the real host was refused and the newcomer received its
/// desired state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_join_as_an_enrolled_id_is_refused_and_the_host_keeps_its_link() {
    for approval in ["auto", "manual"] {
        let master = TestMaster::start_with((
            "join_approval = \"auto\"",
            &format!("join_approval = \"{approval}\""),
        ))
        .await;
        let (_dir, victim) = master.enrolled_minion("victim").await;
        if approval == "manual" {
            master.accept("victim").await;
        }
        let (_sender, mut link) = open_link(&master, &victim).await.expect("the link opens");
        let before = master.minions().await;

        // Even a single-use token, fresh from the admin.
        let created = master
            .create_token(pb::CreateJoinTokenRequest {
                max_uses: Some(1),
                ..Default::default()
            })
            .await;
        let (_thief_dir, thief) = minion_dir();
        let err = master
            .enrol(&thief, created.token.parse().expect("a token"), "victim")
            .await
            .expect_err("a second join as an enrolled id is refused");
        let message = format!("{err:#}");
        assert!(
            message.contains("victim is already enrolled")
                && message.contains("token create --replace victim"),
            "{approval}: the refusal names the remedy: {message}"
        );
        assert_nothing_written(&thief);

        // Nothing changed for the real host: same record, same live link, same certificate.
        assert_eq!(master.minions().await, before, "{approval}");
        let still_open = tokio::time::timeout(Duration::from_millis(500), link.message()).await;
        assert!(
            still_open.is_err(),
            "{approval}: the link ended: {still_open:?}"
        );
        let (_again, _link) = open_link(&master, &victim)
            .await
            .expect("the real host's certificate still works");
        // The refused join did not use up the token.
        let tokens = within(
            "list tokens",
            master
                .admin()
                .await
                .list_join_tokens(pb::ListJoinTokensRequest::default()),
        )
        .await
        .expect("tokens")
        .into_inner()
        .tokens;
        let listed = tokens
            .iter()
            .find(|t| t.token_id == created.token_id)
            .expect("listed");
        assert_eq!((listed.uses, listed.uses_left), (0, Some(1)), "{approval}");
        master.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacing_token_re_enrols_its_host_only_and_drops_the_old_link() {
    let master = TestMaster::start().await;
    let (_dir, old) = master.enrolled_minion("web-1").await;
    let (_other_dir, _other) = master.enrolled_minion("web-2").await;
    let (_sender, mut link) = open_link(&master, &old).await.expect("the link opens");

    let token = master.replacing_token("web-1").await;
    let (_thief_dir, thief) = minion_dir();
    let err = master
        .enrol(&thief, token.clone(), "web-2")
        .await
        .expect_err("a token for web-1 does not take over web-2");
    assert!(
        format!("{err:#}").contains("re-enrols web-1 only"),
        "{err:#}"
    );
    assert_nothing_written(&thief);

    let (_new_dir, rebuilt) = minion_dir();
    master
        .enrol(&rebuilt, token.clone(), "web-1")
        .await
        .expect("the rebuilt host joins as web-1");
    let ended = within("the old link to end", link.message()).await;
    assert!(matches!(ended, Ok(None) | Err(_)), "{ended:?}");
    let refused = open_link(&master, &old)
        .await
        .expect_err("the old certificate is refused");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let (_sender, _link) = open_link(&master, &rebuilt)
        .await
        .expect("the new certificate works");

    // The token was for one join.
    let (_again_dir, again) = minion_dir();
    let err = master
        .enrol(&again, token, "web-1")
        .await
        .expect_err("a replacing token works once");
    assert!(format!("{err:#}").contains("used up"), "{err:#}");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_manual_approval_a_replacement_waits_and_the_host_keeps_its_link() {
    let master =
        TestMaster::start_with(("join_approval = \"auto\"", "join_approval = \"manual\"")).await;
    let (_dir, old) = master.enrolled_minion("web-1").await;
    master.accept("web-1").await;
    let (_sender, mut link) = open_link(&master, &old).await.expect("the link opens");
    let before = master.minions().await[0].clone();

    let (_new_dir, rebuilt) = minion_dir();
    master
        .enrol(&rebuilt, master.replacing_token("web-1").await, "web-1")
        .await
        .expect("the rebuilt host joins and waits");
    let waiting = open_link(&master, &rebuilt)
        .await
        .expect_err("the replacement waits for approval");
    assert!(waiting.message().contains("approval"), "{waiting:?}");
    let now = master.minions().await[0].clone();
    assert!(now.replacement_pending, "{now:?}");
    assert_eq!(
        (now.certificate_sha256.as_str(), now.approval),
        (
            before.certificate_sha256.as_str(),
            pb::Approval::Accepted as i32
        ),
        "the accepted record is untouched"
    );
    let still_open = tokio::time::timeout(Duration::from_millis(500), link.message()).await;
    assert!(still_open.is_err(), "the old link ended: {still_open:?}");

    master.accept("web-1").await;
    let ended = within("the old link to end", link.message()).await;
    assert!(matches!(ended, Ok(None) | Err(_)), "{ended:?}");
    let refused = open_link(&master, &old)
        .await
        .expect_err("the old certificate is refused once the replacement is accepted");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let (_sender, _link) = open_link(&master, &rebuilt)
        .await
        .expect("the replacing machine is the host now");
    master.shutdown().await;
}

/// A link that registers just after a revocation found nothing to drop must not survive it:
/// the connect is held between its admission check and its registration (a fail point) while
/// the host is revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_link_survives_a_revocation_that_races_its_connect() {
    let master = TestMaster::start().await;
    let (_dir, data) = master.enrolled_minion("web-1").await;
    fail::cfg("link::before_register", "return(1000)").expect("configure the fail point");
    let connecting = {
        let channel = master
            .trusted_channel(Some(TestMaster::minion_identity(&data)))
            .await;
        tokio::spawn(async move {
            let (sender, receiver) = tokio::sync::mpsc::channel(4);
            sender.send(hello()).await.expect("queue the hello");
            let opened = pb::minion_link_service_client::MinionLinkServiceClient::new(channel)
                .connect(tokio_stream::wrappers::ReceiverStream::new(receiver))
                .await;
            (sender, opened)
        })
    };
    // The connect has passed its check and waits at the fail point.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let revoked = within(
        "revoke",
        master.admin().await.revoke_minion(pb::RevokeMinionRequest {
            minion_id: "web-1".into(),
        }),
    )
    .await
    .expect("the admin revokes")
    .into_inner();
    assert!(!revoked.disconnected, "no link was registered yet to drop");
    fail::remove("link::before_register");

    let (_sender, opened) = within("the raced connect", connecting)
        .await
        .expect("the connect task");
    match opened {
        Err(status) => {
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
            assert!(status.message().contains("revoked"), "{status:?}");
        }
        Ok(response) => {
            let mut link = response.into_inner();
            let ended = within("the raced link to end", link.message()).await;
            panic!("a link outlived the revocation: its first message was {ended:?}");
        }
    }
    let listed = master.minions().await;
    assert!(!listed[0].connected, "{listed:?}");
    master.shutdown().await;
}

/// Guesses sent all at once cannot slip past the throttle before their failures are counted:
/// at most its allowance reaches the token check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_joins_are_throttled_as_they_arrive() {
    let master = TestMaster::start().await;
    let real = master.join_token(0).await;
    let guess = JoinToken {
        ca_digest: real.ca_digest.clone(),
        secret: "0".repeat(40),
    };
    let enrolment = pb::enrolment_service_client::EnrolmentServiceClient::new(
        master.trusted_channel(None).await,
    );
    let attempts: Vec<_> = (0..100)
        .map(|_| {
            let mut enrolment = enrolment.clone();
            let token = guess.to_string();
            tokio::spawn(async move {
                enrolment
                    .join(pb::JoinRequest {
                        token,
                        csr_pem: "unused".into(),
                        minion_id: "guesser".into(),
                    })
                    .await
            })
        })
        .collect();
    let mut codes = std::collections::BTreeMap::new();
    for attempt in attempts {
        let result = within("a concurrent join", attempt)
            .await
            .expect("the task");
        let status = result.expect_err("a guessed token must not enrol");
        if status.code() == Code::ResourceExhausted {
            assert!(
                status.message().contains("too many failed join attempts"),
                "{status:?}"
            );
        }
        *codes.entry(format!("{:?}", status.code())).or_insert(0) += 1;
    }
    let reached = codes.get("Unauthenticated").copied().unwrap_or(0);
    assert!(
        (1..=10).contains(&reached),
        "at most the throttle's allowance may reach the token check: {codes:?}"
    );
    // The rest are throttled, or refused before they start: one connection carries at most 32
    // streams at once, and a burst sent before the client has heard so is turned away.
    let turned_away = codes.get("ResourceExhausted").copied().unwrap_or(0)
        + codes.get("Unavailable").copied().unwrap_or(0);
    assert_eq!(turned_away, 100 - reached, "{codes:?}");
    master.shutdown().await;
}

/// Whether the peer keeps `stream` open: it reads what the peer sent (the master greets TLS
/// peers with its HTTP/2 settings) until the peer closes or stays quiet for a moment.
async fn still_open(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Err(_) => return true,
            Ok(Ok(0) | Err(_)) => return false,
            Ok(Ok(_)) => {}
        }
    }
}

/// 2,000 connections from one address that complete a TLS handshake without a certificate and
/// then say nothing, plus 500 that never even start TLS, must not keep a host from linking up
/// again or an operator from being answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_unauthenticated_connections_do_not_crowd_out_hosts_or_operators() {
    use tokio::io::AsyncReadExt;
    let master = TestMaster::start().await;
    let (_dir, host) = master.enrolled_minion("web-1").await;
    let config = std::sync::Arc::new(
        client_config(MasterTrust::Ca(master.ca()), None).expect("a client configuration"),
    );
    let connector = tokio_rustls::TlsConnector::from(config);
    let server_name = rustls::pki_types::ServerName::try_from("localhost").expect("a server name");
    let mut silent = vec![];
    for _ in 0..500 {
        if let Ok(tcp) = tokio::net::TcpStream::connect(&master.address).await {
            silent.push(tcp);
        }
    }
    let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let attackers: Vec<_> = (0..2_000)
        .map(|_| {
            let (connector, server_name, address) = (
                connector.clone(),
                server_name.clone(),
                master.address.clone(),
            );
            let opened = opened.clone();
            tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(address).await.ok()?;
                let tls = tokio::time::timeout(STEP_TIMEOUT, connector.connect(server_name, tcp))
                    .await
                    .ok()?
                    .ok()?;
                opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Some(tls)
            })
        })
        .collect();
    let mut idle = vec![];
    for attacker in attackers {
        if let Some(tls) = within("an idle connection", attacker).await.expect("task") {
            idle.push(tls);
        }
    }
    let handshakes = opened.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "{} silent TCP connections held, {handshakes} of 2000 TLS handshakes completed",
        silent.len()
    );
    // The attackers now sit idle, as idle peers do.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The master holds no more of them than its per-source limit (64); it closed the rest.
    let mut open = 0;
    for chunk in idle.chunks_mut(100) {
        let checks = chunk.iter_mut().map(still_open);
        open += futures::future::join_all(checks)
            .await
            .into_iter()
            .filter(|&alive| alive)
            .count();
    }
    for chunk in silent.chunks_mut(100) {
        let checks = chunk.iter_mut().map(still_open);
        open += futures::future::join_all(checks)
            .await
            .into_iter()
            .filter(|&alive| alive)
            .count();
    }
    assert!(
        open <= 64,
        "the master still holds {open} connections of a peer without a certificate"
    );

    let answered = std::time::Instant::now();
    let (_sender, _link) = open_link(&master, &host)
        .await
        .expect("the host links up again");
    assert!(master.minion_ids().await.contains(&"web-1".to_owned()));
    let took = answered.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the host and the operator waited {took:?}"
    );

    // A peer without a certificate that says nothing is let go within seconds.
    // (The master greets with its HTTP/2 settings first; the connection then ends.)
    let mut held = idle.pop().expect("at least one handshake completed");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 256];
        loop {
            match held.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "an idle anonymous connection stayed open");
    drop((idle, silent));
    master.shutdown().await;
}

/// A hello with the given facts, on a link opened as `data`'s host.
async fn open_link_with_facts(
    master: &TestMaster,
    data: &MinionDataDir,
    facts: pb::Facts,
) -> Result<tonic::Streaming<pb::ConnectResponse>, Status> {
    let channel = master
        .trusted_channel(Some(TestMaster::minion_identity(data)))
        .await;
    let hello = pb::ConnectRequest {
        kind: Some(pb::connect_request::Kind::Hello(pb::Hello {
            version: "0.1.0".into(),
            facts: Some(facts),
            running: vec![],
            now: None,
        })),
    };
    within(
        "open a link",
        pb::minion_link_service_client::MinionLinkServiceClient::new(channel)
            .connect(tokio_stream::iter(vec![hello])),
    )
    .await
    .map(tonic::Response::into_inner)
}

/// A host's hello says what its clock reads; any number, however absurd, is taken as the
/// offset it gives (clamped), never crashes the master, and the link works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_clock_in_a_hello_is_recorded_and_harms_nothing() {
    let master = TestMaster::start().await;
    let (_dir, data) = master.enrolled_minion("web-1").await;
    for now_unix_ms in [i64::MIN, i64::MAX, -1] {
        let channel = master
            .trusted_channel(Some(TestMaster::minion_identity(&data)))
            .await;
        let hello = pb::ConnectRequest {
            kind: Some(pb::connect_request::Kind::Hello(pb::Hello {
                version: "0.1.0".into(),
                now: Some(brine_proto::time::timestamp(now_unix_ms)),
                ..Default::default()
            })),
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        sender.send(hello).await.expect("queue the hello");
        let mut link = within(
            "open a link",
            pb::minion_link_service_client::MinionLinkServiceClient::new(channel)
                .connect(tokio_stream::wrappers::ReceiverStream::new(receiver)),
        )
        .await
        .unwrap_or_else(|status| panic!("a hello at {now_unix_ms} was refused: {status:?}"))
        .into_inner();
        let first = within("the master's clock", link.message()).await;
        assert!(
            matches!(
                first,
                Ok(Some(pb::ConnectResponse {
                    kind: Some(pb::connect_response::Kind::Clock(_))
                }))
            ),
            "{now_unix_ms}: {first:?}"
        );
        let minions = master.minions().await;
        let offset = brine_proto::time::signed_ms("clock_offset", minions[0].clock_offset)
            .expect("a well-formed offset")
            .expect("an offset");
        assert_eq!(
            offset.signum(),
            now_unix_ms.signum(),
            "{now_unix_ms}: {offset}"
        );
        drop(sender);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_facts_are_refused_and_nothing_is_recorded() {
    let master = TestMaster::start().await;
    let (_dir, data) = master.enrolled_minion("web-1").await;
    let before = master.minions().await;
    let refused = open_link_with_facts(
        &master,
        &data,
        pb::Facts {
            hostname: "h".repeat(10_000),
            ..Default::default()
        },
    )
    .await
    .expect_err("a 10 kB host name is refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("hello.facts.hostname"),
        "{refused:?}"
    );
    let labels = (0..100)
        .map(|n| (format!("k{n}"), "v".to_owned()))
        .collect();
    let refused = open_link_with_facts(
        &master,
        &data,
        pb::Facts {
            labels,
            ..Default::default()
        },
    )
    .await
    .expect_err("100 labels are refused");
    assert!(
        refused.message().contains("hello.facts.labels"),
        "{refused:?}"
    );
    assert_eq!(master.minions().await, before, "nothing was recorded");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_sequences_from_a_host_are_shown_escaped_by_the_cli() {
    let master = TestMaster::start().await;
    let (_dir, data) = master.enrolled_minion("web-1").await;
    let forged = "evil\u{1b}[2J\u{1b}[H\r\nweb-2  up  0000  Debian  20.10";
    let _link = open_link_with_facts(
        &master,
        &data,
        pb::Facts {
            hostname: forged.into(),
            os: forged.into(),
            ..Default::default()
        },
    )
    .await
    .expect("the link opens");
    for args in [&["minions"][..], &["minions", "show", "web-1"][..]] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_brine-master"))
            .args(args)
            .arg("--master")
            .arg(&master.address)
            .arg("--ca")
            .arg(master.data.ca_cert())
            .arg("--cert")
            .arg(master.data.admin_cert())
            .arg("--key")
            .arg(master.data.admin_key())
            .env_remove("BRINE_MASTER_DATA_DIR")
            .output()
            .expect("run brine-master");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{args:?}: {stdout}");
        assert!(
            !stdout.contains('\u{1b}') && !stdout.contains('\r'),
            "{args:?} printed a host's control characters: {stdout:?}"
        );
        assert!(stdout.contains("evil\\u{1b}[2J"), "{args:?}: {stdout}");
        assert!(
            !stdout.lines().any(|l| l.starts_with("web-2")),
            "{args:?} printed a forged line: {stdout}"
        );
    }
    master.shutdown().await;
}

/// A CI pipeline cannot hold the fleet lock for longer than `ci_lock_limit`: a job that could
/// (a long timeout, many batches) is refused before it takes the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_job_that_could_hold_the_lock_too_long_is_refused() {
    let master = TestMaster::start_with(("ci_lock_limit = \"1h\"", "ci_lock_limit = \"5m\"")).await;
    let (_dir, _host) = master.enrolled_minion("web-1").await;
    std::fs::write(
        master.data.roles(),
        "[roles.web]\nimage = \"127.0.0.1:1/app:tested\"\n[[roles.web.containers]]\nname = \"web\"\n\n[assign]\n\"web-*\" = [\"web\"]\n",
    )
    .expect("write roles.toml");
    let (_ci_dir, ci) = master.operator_identity(CertRole::Ci, "pipeline");
    let mut fleet = master.fleet(Some(ci)).await;
    let result = within(
        "a long ci highstate",
        fleet.highstate(pb::HighstateRequest {
            options: Some(pb::JobOptions {
                batch_timeout: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    )
    .await;
    expect_refused(
        "a ci highstate that could hold the lock for an hour",
        result,
        Code::PermissionDenied,
        "ci_lock_limit",
    );
    let lock = within(
        "get lock",
        master.admin().await.get_lock(pb::GetLockRequest {}),
    )
    .await
    .expect("the lock state")
    .into_inner()
    .lock
    .expect("the lock");
    assert!(!lock.locked, "{lock:?}");
    master.shutdown().await;
}

/// Plans take no lock; they are limited in rate instead, so a caller cannot keep every host's
/// Docker engine busy answering them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_are_limited_in_rate() {
    let master = TestMaster::start().await;
    let (_ci_dir, ci) = master.operator_identity(CertRole::Ci, "pipeline");
    let mut fleet = master.fleet(Some(ci)).await;
    let plan = || pb::HighstateRequest {
        plan: true,
        ..Default::default()
    };
    for n in 0..12 {
        let result = within("a plan", fleet.highstate(plan())).await;
        let status = result.expect_err("no hosts: the plan itself fails");
        assert_ne!(
            status.code(),
            Code::ResourceExhausted,
            "plan {n}: {status:?}"
        );
    }
    let result = within("one plan too many", fleet.highstate(plan())).await;
    expect_refused(
        "the 13th plan in a minute",
        result,
        Code::ResourceExhausted,
        "plans started within the last minute",
    );
    master.shutdown().await;
}

/// After a renewal the previous certificate can at most fetch the certificate issued then,
/// never have a new one minted, and nothing at all once the new one is in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_closes_the_door_behind_it() {
    let master = TestMaster::start().await;
    let (_dir, data) = master.enrolled_minion("web-1").await;
    let old_dir = tempfile::tempdir().expect("a temp dir");
    let old = MinionDataDir::new(old_dir.path());
    std::fs::copy(data.cert(), old.cert()).expect("keep the old certificate");
    std::fs::copy(data.key(), old.key()).expect("keep the old key");
    let id = MinionId::new("web-1").expect("an id");
    let renew_as = |who: &MinionDataDir| {
        let identity = TestMaster::minion_identity(who);
        let master = &master;
        async move {
            let channel = master.trusted_channel(Some(identity)).await;
            let (_, csr_pem) =
                brine_minion::identity::new_key_and_csr(&MinionId::new("web-1").expect("an id"))
                    .expect("a csr");
            within(
                "renew",
                pb::minion_link_service_client::MinionLinkServiceClient::new(channel)
                    .renew(pb::RenewRequest { csr_pem }),
            )
            .await
            .map(|r| r.into_inner().certificate_pem)
        }
    };

    let channel = master
        .trusted_channel(Some(TestMaster::minion_identity(&data)))
        .await;
    within("renew", brine_minion::renewal::renew(&data, &id, channel))
        .await
        .unwrap_or_else(|err| panic!("the renewal failed: {err:#}"));
    let issued = std::fs::read_to_string(data.cert()).expect("the renewed certificate");

    // The old certificate, with a fresh key and CSR, gets the very certificate issued before.
    for _ in 0..2 {
        let again = renew_as(&old)
            .await
            .expect("the previous certificate may ask again");
        assert_eq!(
            again, issued,
            "a new certificate was minted for the old one"
        );
    }
    // Once the new certificate is used, the old one gets nothing.
    let (_sender, _link) = open_link(&master, &data)
        .await
        .expect("the renewed certificate connects");
    let refused = renew_as(&old)
        .await
        .expect_err("the old certificate is done with");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("newer certificate"),
        "{refused:?}"
    );
    master.shutdown().await;
}

/// However much hosts report, a page of `ListMinions` fits gRPC's default 4 MiB message limit:
/// pages end at 3 MiB or at the page size, and tokens carry on where they ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_listings_come_in_pages_that_fit_the_message_limit() {
    let master = TestMaster::start().await;
    let mut links = vec![];
    let mut dirs = vec![];
    for n in 0..4 {
        let id = format!("web-{n}");
        let (dir, data) = master.enrolled_minion(&id).await;
        let running = (0..900)
            .map(|c| pb::RunningContainer {
                name: format!("c{c}"),
                role: "web".into(),
                image: format!("registry.example.com:5000/{}:tested", "a".repeat(450)),
                image_digest: format!("sha256:{}", "0".repeat(450)),
                state: "running".into(),
                container_id: "f".repeat(64),
            })
            .collect();
        let hello = pb::ConnectRequest {
            kind: Some(pb::connect_request::Kind::Hello(pb::Hello {
                version: "0.1.0".into(),
                facts: Some(pb::Facts::default()),
                running,
                now: None,
            })),
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        sender.send(hello).await.expect("queue the hello");
        let channel = master
            .trusted_channel(Some(TestMaster::minion_identity(&data)))
            .await;
        let link = within(
            "open a link with a large hello",
            pb::minion_link_service_client::MinionLinkServiceClient::new(channel)
                .connect(tokio_stream::wrappers::ReceiverStream::new(receiver)),
        )
        .await
        .expect("the link opens");
        links.push((sender, link));
        dirs.push(dir);
    }
    let mut admin = master.admin().await;
    let mut seen = vec![];
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = within(
            "a page of hosts",
            admin.list_minions(pb::ListMinionsRequest {
                page_size: 0,
                page_token: token,
                filter: String::new(),
            }),
        )
        .await
        .expect("a page")
        .into_inner();
        let size = prost::Message::encoded_len(&page);
        assert!(size < 4 * 1024 * 1024, "a page of {size} bytes");
        pages += 1;
        seen.extend(page.minions.into_iter().map(|m| m.minion_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["web-0", "web-1", "web-2", "web-3"]);
    assert!(
        pages >= 2,
        "four hosts of ~1 MiB each came in {pages} page(s)"
    );

    let small = within(
        "a small page",
        admin.list_minions(pb::ListMinionsRequest {
            page_size: 3,
            page_token: "web-0".into(),
            filter: String::new(),
        }),
    )
    .await
    .expect("a page")
    .into_inner();
    let ids: Vec<&str> = small.minions.iter().map(|m| m.minion_id.as_str()).collect();
    assert!(ids.len() <= 3 && ids[0] == "web-1", "{ids:?}");
    let result = within(
        "a forged token",
        admin.list_minions(pb::ListMinionsRequest {
            page_size: 0,
            page_token: "not/an id".into(),
            filter: String::new(),
        }),
    )
    .await;
    expect_refused(
        "a forged page token",
        result,
        Code::InvalidArgument,
        "page_token",
    );

    // A filter picks hosts with the target syntax, a page at a time.
    let mut filtered = vec![];
    let mut token = String::new();
    loop {
        let page = within(
            "a filtered page",
            admin.list_minions(pb::ListMinionsRequest {
                page_size: 1,
                page_token: token,
                filter: "web-[13]".into(),
            }),
        )
        .await
        .expect("a filtered page")
        .into_inner();
        assert!(page.minions.len() <= 1, "{:?}", page.minions.len());
        filtered.extend(page.minions.into_iter().map(|m| m.minion_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(filtered, ["web-1", "web-3"]);
    let result = within(
        "a malformed filter",
        admin.list_minions(pb::ListMinionsRequest {
            filter: "web-1 and (".into(),
            ..Default::default()
        }),
    )
    .await;
    expect_refused(
        "a malformed filter",
        result,
        Code::InvalidArgument,
        "filter",
    );
    drop(links);
    master.shutdown().await;
}

/// Every list pages; a refusal names a reason a program can branch on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_come_in_pages_and_an_unknown_job_is_refused_with_its_reason() {
    let master = TestMaster::start().await;
    let mut created = vec![];
    for _ in 0..5 {
        created.push(
            master
                .create_token(pb::CreateJoinTokenRequest::default())
                .await
                .token_id,
        );
    }
    let mut admin = master.admin().await;
    let mut listed = vec![];
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = within(
            "a page of tokens",
            admin.list_join_tokens(pb::ListJoinTokensRequest {
                page_size: 2,
                page_token: token,
            }),
        )
        .await
        .expect("a page of tokens")
        .into_inner();
        pages += 1;
        assert!(page.tokens.len() <= 2, "{page:?}");
        listed.extend(page.tokens.into_iter().map(|t| t.token_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let mut sorted = listed.clone();
    sorted.sort();
    sorted.dedup();
    created.sort();
    assert_eq!(sorted, created, "every token once: {listed:?}");

    let status = within(
        "watch a job that never was",
        admin.watch_job(pb::WatchJobRequest {
            job_id: "20990101T000000-00000000".into(),
        }),
    )
    .await
    .expect_err("no such job");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let failure = brine_proto::errors::Failure::of(&status);
    assert_eq!(
        failure.reason,
        Some(pb::ErrorReason::JobNotFound),
        "{status:?}"
    );

    let version = within("version", admin.get_version(pb::GetVersionRequest {}))
        .await
        .expect("the master's version")
        .into_inner();
    assert_eq!(version.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(version.api, "brine.v1");
    master.shutdown().await;
}

/// A job that waits for the lock answers at once and waits inside its stream (the wait may be
/// longer than the master's deadline for an answer); refused after the wait, the stream ends
/// with the refusal and its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_waiting_for_the_lock_is_refused_in_its_stream_when_the_wait_ends() {
    let master = TestMaster::start().await;
    let (_dir, _host) = master.enrolled_minion("web-1").await;
    std::fs::write(
        master.data.roles(),
        "[roles.web]\nimage = \"127.0.0.1:1/app@sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n[[roles.web.containers]]\nname = \"web\"\n\n[assign]\n\"web-*\" = [\"web\"]\n",
    )
    .expect("write roles.toml");
    let mut admin = master.admin().await;
    within(
        "lock the fleet",
        admin.acquire_lock(pb::AcquireLockRequest {
            message: "maintenance".into(),
            ttl: None,
        }),
    )
    .await
    .expect("the fleet is locked");
    let started = std::time::Instant::now();
    let mut stream = within(
        "a highstate that waits for the lock",
        admin.highstate(pb::HighstateRequest {
            options: Some(pb::JobOptions {
                wait_for_lock: Some(prost_types::Duration {
                    seconds: 2,
                    nanos: 0,
                }),
                ..Default::default()
            }),
            plan: false,
        }),
    )
    .await
    .expect("the call is answered at once, before the wait")
    .into_inner();
    let refused = within("the end of the wait", stream.message())
        .await
        .expect_err("still locked after the wait");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    let failure = brine_proto::errors::Failure::of(&refused);
    assert_eq!(
        failure.reason,
        Some(pb::ErrorReason::FleetLocked),
        "{refused:?}"
    );
    assert_eq!(failure.metadata["message"], "maintenance", "{refused:?}");
    master.shutdown().await;
}

/// Lists the services the master describes through gRPC server reflection (v1), as `identity`.
async fn reflected_services(
    master: &TestMaster,
    identity: Option<ClientIdentity>,
) -> Result<Vec<String>, Status> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let mut reflection = ServerReflectionClient::new(master.trusted_channel(identity).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = within(
        "server_reflection_info",
        reflection.server_reflection_info(tokio_stream::once(request)),
    )
    .await?
    .into_inner();
    let answer = within("the reflection answer", answers.message())
        .await?
        .expect("an answer to ListServices");
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("not a list of services: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_describes_the_api_to_operators_and_ci_only() {
    let master = TestMaster::start().await;

    let services = reflected_services(&master, Some(admin_identity(&master.data)))
        .await
        .expect("an admin lists the services");
    for service in [
        "brine.v1.FleetService",
        "brine.v1.EnrolmentService",
        "brine.v1.MinionLinkService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|s| s == service),
            "{service} missing from {services:?}"
        );
    }
    let (_ci_dir, ci) = master.operator_identity(CertRole::Ci, "pipeline");
    reflected_services(&master, Some(ci))
        .await
        .expect("a CI certificate lists the services");

    // A host's certificate, or none at all, learns nothing about the API.
    let (_dir, minion) = master.enrolled_minion("web-1").await;
    expect_refused(
        "reflection with a minion certificate",
        reflected_services(&master, Some(TestMaster::minion_identity(&minion))).await,
        Code::PermissionDenied,
        "minion role",
    );
    expect_refused(
        "reflection without a certificate",
        reflected_services(&master, None).await,
        Code::Unauthenticated,
        "client certificate",
    );
    master.shutdown().await;
}

/// Every secret call made with `fleet`, each refused with `code` and `needle`.
async fn expect_secret_calls_refused(
    who: &str,
    fleet: &mut pb::fleet_service_client::FleetServiceClient<Channel>,
    code: Code,
    needle: &str,
) {
    let set = within(
        "set_secret",
        fleet.set_secret(pb::SetSecretRequest {
            name: "db".into(),
            value: "overwritten".into(),
        }),
    )
    .await
    .map(|_| ());
    let list = within(
        "list_secrets",
        fleet.list_secrets(pb::ListSecretsRequest {}),
    )
    .await
    .map(|_| ());
    let delete = within(
        "delete_secret",
        fleet.delete_secret(pb::DeleteSecretRequest {
            name: "db".into(),
            force: true,
        }),
    )
    .await
    .map(|_| ());
    for (call, result) in [
        ("SetSecret", set),
        ("ListSecrets", list),
        ("DeleteSecret", delete),
    ] {
        expect_refused(&format!("{call} {who}"), result, code, needle);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_an_admins_only_and_no_call_returns_a_value() {
    let master = TestMaster::start().await;
    let value = "correct horse battery staple";
    let mut admin = master.admin().await;
    let set = admin
        .set_secret(pb::SetSecretRequest {
            name: "db".into(),
            value: value.into(),
        })
        .await
        .expect("an admin sets a secret")
        .into_inner();
    assert!(set.created && !set.changed, "{set:?}");
    let fingerprint = set.secret.clone().unwrap_or_default().fingerprint;
    assert_eq!(fingerprint.len(), 32, "{set:?}");

    // A CI pipeline deploys with secrets but can neither read, change nor delete them; a
    // host's certificate or none at all, still less.
    let (_dirs, outsiders) = master.outsiders().await;
    for mut outsider in outsiders {
        expect_secret_calls_refused(
            outsider.who,
            &mut outsider.fleet,
            outsider.code,
            outsider.needle,
        )
        .await;
    }

    // Nothing the refused callers sent changed the secret, and no answer carries a value.
    let listed = admin
        .list_secrets(pb::ListSecretsRequest {})
        .await
        .expect("an admin lists the secrets")
        .into_inner();
    assert_eq!(listed.secrets.len(), 1, "{listed:?}");
    assert_eq!(listed.secrets[0].fingerprint, fingerprint);
    assert!(!format!("{listed:?}{set:?}").contains(value));

    // Bad input is refused naming the field, and the refusal does not echo the value.
    let bad_name = admin
        .set_secret(pb::SetSecretRequest {
            name: "../db".into(),
            value: "x".into(),
        })
        .await;
    expect_refused("a bad secret name", bad_name, Code::InvalidArgument, "name");
    let nul = admin
        .set_secret(pb::SetSecretRequest {
            name: "db".into(),
            value: "sec\0ret-with-nul".into(),
        })
        .await;
    let status = nul.expect_err("a value with NUL is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with("value"), "{status:?}");
    assert!(
        !format!("{status:?}").contains("ret-with-nul"),
        "{status:?}"
    );

    // The store holds it sealed: the value is nowhere in the database file.
    let store = std::fs::read(master.data.store()).expect("read state.redb");
    assert!(
        !store.windows(value.len()).any(|w| w == value.as_bytes()),
        "the value is in state.redb in clear"
    );
    drop(admin);
    master.shutdown().await;
}

/// `Exec` of `command` in role `web` on the hosts `target` picks.
fn exec_request(target: &str, command: &[&str]) -> pb::ExecRequest {
    pb::ExecRequest {
        role: "web".into(),
        container: String::new(),
        target: target.into(),
        command: command.iter().map(|arg| (*arg).to_owned()).collect(),
        timeout: None,
    }
}

/// The next `StartSession` the master sends down a link, skipping anything else.
async fn next_start_session(link: &mut tonic::Streaming<pb::ConnectResponse>) -> pb::StartSession {
    loop {
        let message = within("a command on the link", link.message())
            .await
            .expect("the link stays up")
            .expect("the link stays open");
        if let Some(pb::connect_response::Kind::StartSession(start)) = message.kind {
            return start;
        }
    }
}

/// What a minion says about a session.
fn session_message(kind: pb::connect_request::Kind) -> pb::ConnectRequest {
    pb::ConnectRequest { kind: Some(kind) }
}

/// Reads an `Exec` stream to its end: each host's output, and how each ended.
async fn exec_outcome(
    mut stream: tonic::Streaming<pb::ExecResponse>,
) -> (Vec<(String, Vec<u8>)>, Vec<pb::HostSessionEnded>) {
    let (mut output, mut ended) = (vec![], vec![]);
    while let Some(piece) = within("the exec stream", stream.message())
        .await
        .expect("the exec stream ends cleanly")
    {
        match piece.kind {
            Some(pb::exec_response::Kind::Output(out)) => output.push((out.minion_id, out.data)),
            Some(pb::exec_response::Kind::Ended(end)) => ended.push(end),
            _ => {}
        }
    }
    (output, ended)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_exec_are_for_admins_and_a_host_speaks_only_for_its_own_sessions() {
    let master = TestMaster::start().await;
    let (_ci_dir, ci) = master.operator_identity(CertRole::Ci, "pipeline");
    let mut as_ci = master.fleet(Some(ci)).await;
    let result = within("exec", as_ci.exec(exec_request("", &["id"]))).await;
    expect_refused(
        "Exec with a ci certificate",
        result.map(|_| ()),
        Code::PermissionDenied,
        "ci role",
    );
    let result = within(
        "container_logs",
        as_ci.container_logs(pb::ContainerLogsRequest::default()),
    )
    .await;
    expect_refused(
        "ContainerLogs with a ci certificate",
        result.map(|_| ()),
        Code::PermissionDenied,
        "ci role",
    );

    std::fs::write(
        master.data.root().join("roles.toml"),
        "[roles.web]\nimage = \"127.0.0.1:5000/app:1\"\n[[roles.web.containers]]\nname = \"app\"\n\n[assign]\n\"web-*\" = [\"web\"]\n",
    )
    .expect("write roles.toml");
    let (_web_1_dir, web_1) = master.enrolled_minion("web-1").await;
    let (_web_2_dir, web_2) = master.enrolled_minion("web-2").await;
    let (to_web_1, mut from_web_1) = open_link(&master, &web_1).await.expect("link web-1");
    let (to_web_2, mut from_web_2) = open_link(&master, &web_2).await.expect("link web-2");
    let mut admin = master.admin().await;

    // web-2 stands for a minion older than the master: it ignores the request it does not know.
    let silent = within("exec", admin.exec(exec_request("web-2", &["id"])))
        .await
        .expect("exec on web-2")
        .into_inner();
    let ignored = next_start_session(&mut from_web_2).await;
    assert_eq!(ignored.minion_id, "web-2");

    let stream = within("exec", admin.exec(exec_request("web-1", &["id"])))
        .await
        .expect("exec on web-1")
        .into_inner();
    let start = next_start_session(&mut from_web_1).await;
    assert_eq!(start.minion_id, "web-1");
    assert_eq!(
        (start.role.as_str(), start.container.as_str()),
        ("web", "app")
    );
    assert!(start.ends_at.is_some(), "a command has a deadline");
    let limits = start.limits.expect("limits");
    assert_eq!(limits.max_bytes, 1024 * 1024);
    let session_id = start.session_id.clone();

    // web-2 answers for web-1's session: not heard.
    let forged = [
        pb::connect_request::Kind::SessionOutput(pb::SessionOutput {
            session_id: session_id.clone(),
            stream: pb::OutputStream::Stdout.into(),
            data: b"forged by web-2\n".to_vec(),
            dropped_bytes: 0,
        }),
        pb::connect_request::Kind::SessionEnded(pb::SessionEnded {
            session_id: session_id.clone(),
            exit_code: Some(0),
            ..Default::default()
        }),
    ];
    for kind in forged {
        to_web_2
            .send(session_message(kind))
            .await
            .expect("web-2 sends");
    }
    // web-1's own answers: a chunk over the bound is dropped where it arrives; the rest counts.
    let answers = [
        pb::connect_request::Kind::SessionAccepted(pb::SessionAccepted {
            session_id: session_id.clone(),
        }),
        pb::connect_request::Kind::SessionOutput(pb::SessionOutput {
            session_id: session_id.clone(),
            stream: pb::OutputStream::Stdout.into(),
            data: vec![b'x'; 64 * 1024 + 1],
            dropped_bytes: 0,
        }),
        pb::connect_request::Kind::SessionOutput(pb::SessionOutput {
            session_id: session_id.clone(),
            stream: pb::OutputStream::Stdout.into(),
            data: b"genuine\n".to_vec(),
            dropped_bytes: 0,
        }),
        pb::connect_request::Kind::SessionEnded(pb::SessionEnded {
            session_id: session_id.clone(),
            exit_code: Some(7),
            ..Default::default()
        }),
    ];
    for kind in answers {
        to_web_1
            .send(session_message(kind))
            .await
            .expect("web-1 sends");
    }
    let (output, ended) = exec_outcome(stream).await;
    assert_eq!(output, vec![("web-1".to_owned(), b"genuine\n".to_vec())]);
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].minion_id, "web-1");
    assert_eq!(ended[0].exit_code, Some(7), "{ended:?}");

    // The silent host is reported as not answering, within seconds, not waited for forever.
    let (output, ended) = exec_outcome(silent).await;
    assert!(output.is_empty(), "{output:?}");
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(ended[0].error.contains("did not answer"), "{:?}", ended[0]);

    // A host whose clock or link made it stop at a slightly other moment says only that the end
    // time came: the caller hears the timeout it asked for, not the host's arithmetic.
    let timed = within("exec", admin.exec(exec_request("web-1", &["sleep", "99"])))
        .await
        .expect("exec on web-1")
        .into_inner();
    let start = next_start_session(&mut from_web_1).await;
    to_web_1
        .send(session_message(pb::connect_request::Kind::SessionEnded(
            pb::SessionEnded {
                session_id: start.session_id,
                timed_out: true,
                ..Default::default()
            },
        )))
        .await
        .expect("web-1 sends");
    let (_, ended) = exec_outcome(timed).await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(
        ended[0].error.starts_with("timed out after 1m;"),
        "{:?}",
        ended[0]
    );
    drop((to_web_1, to_web_2, admin, as_ci));
    master.shutdown().await;
}

/// The fleet's events tell who links, who is let in and how jobs end: only operators and CI
/// read them. An attacker without a certificate, or with a host's, gets nothing; a watcher's
/// request is checked at the edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_operators_and_ci_watch_the_fleets_events() {
    let master = TestMaster::start().await;
    let (_dir, minion) = master.enrolled_minion("web-1").await;
    let watch = pb::WatchRequest {
        replay_recent: true,
        follow: false,
        kinds: vec![],
    };

    let mut anonymous =
        pb::fleet_service_client::FleetServiceClient::new(master.trusted_channel(None).await);
    let result = within("watch", anonymous.watch(watch.clone())).await;
    expect_refused(
        "Watch without a certificate",
        result,
        Code::Unauthenticated,
        "client certificate",
    );
    let result = within(
        "list_hook_failures",
        anonymous.list_hook_failures(pb::ListHookFailuresRequest {}),
    )
    .await;
    expect_refused(
        "ListHookFailures without a certificate",
        result,
        Code::Unauthenticated,
        "client certificate",
    );

    let mut host = master
        .fleet(Some(TestMaster::minion_identity(&minion)))
        .await;
    let result = within("watch", host.watch(watch.clone())).await;
    expect_refused(
        "Watch with a minion certificate",
        result,
        Code::PermissionDenied,
        "minion role",
    );
    let result = within(
        "list_hook_failures",
        host.list_hook_failures(pb::ListHookFailuresRequest {}),
    )
    .await;
    expect_refused(
        "ListHookFailures with a minion certificate",
        result,
        Code::PermissionDenied,
        "minion role",
    );

    // A host's link is an event; CI reads it.
    let (_sender, _link) = open_link(&master, &minion).await.expect("the link opens");
    let (_ci_dir, ci) = master.operator_identity(CertRole::Ci, "pipeline");
    let mut ci = master.fleet(Some(ci)).await;
    let mut events = within("watch", ci.watch(watch.clone()))
        .await
        .expect("CI may watch")
        .into_inner();
    let mut kinds = vec![];
    while let Some(response) = within("an event", events.message())
        .await
        .expect("the stream")
    {
        kinds.push(response.event.and_then(|event| event.kind));
    }
    assert!(
        kinds.iter().any(|kind| matches!(
            kind,
            Some(pb::fleet_event::Kind::HostLinked(change)) if change.minion_id == "web-1"
        )),
        "{kinds:?}"
    );
    within(
        "list_hook_failures",
        ci.list_hook_failures(pb::ListHookFailuresRequest {}),
    )
    .await
    .expect("CI may read the failed hook deliveries");

    let result = within(
        "watch",
        master.admin().await.watch(pb::WatchRequest {
            kinds: vec![0],
            ..watch
        }),
    )
    .await;
    expect_refused(
        "Watch for an unknown kind",
        result,
        Code::InvalidArgument,
        "kinds",
    );
    drop((anonymous, host, ci));
    master.shutdown().await;
}

/// Every dashboard call made with `fleet`, each refused with `code` and `needle`.
async fn expect_dashboard_calls_refused(
    who: &str,
    fleet: &mut pb::fleet_service_client::FleetServiceClient<Channel>,
    code: Code,
    needle: &str,
) {
    let login = within(
        "create_dashboard_login",
        fleet.create_dashboard_login(pb::CreateDashboardLoginRequest {
            ttl: None,
            admin: true,
        }),
    )
    .await
    .map(|_| ());
    let list = within(
        "list_dashboard_sessions",
        fleet.list_dashboard_sessions(pb::ListDashboardSessionsRequest {}),
    )
    .await
    .map(|_| ());
    let revoke = within(
        "revoke_dashboard_session",
        fleet.revoke_dashboard_session(pb::RevokeDashboardSessionRequest {
            session_id: "any".into(),
        }),
    )
    .await
    .map(|_| ());
    for (call, result) in [
        ("CreateDashboardLogin", login),
        ("ListDashboardSessions", list),
        ("RevokeDashboardSession", revoke),
    ] {
        expect_refused(&format!("{call} {who}"), result, code, needle);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_signs_browsers_in_to_the_dashboard() {
    let master = TestMaster::start().await;
    // A CI pipeline's certificate must not mint an admin session it could act with in a
    // browser; a host's certificate or none at all, still less.
    let (_dirs, outsiders) = master.outsiders().await;
    for mut outsider in outsiders {
        expect_dashboard_calls_refused(
            outsider.who,
            &mut outsider.fleet,
            outsider.code,
            outsider.needle,
        )
        .await;
    }
    master.shutdown().await;
}
