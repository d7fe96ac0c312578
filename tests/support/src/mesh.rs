//! An in-process mesh: a coordinator and nodes, each on listeners bound before it starts, over real
//! mutual TLS with certificates from a [`Pki`]. Dropping it shuts everything down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use doorzet_coordinator::config::{CoordinatorConfig, DirectorySource};
use doorzet_coordinator::directory_file::{
    CoordinatorEntry, DirectoryFile, KeyEntry, MemberEntry, Revoked,
};
use doorzet_ctl::local_mesh::{COORDINATOR, MEMBERS};
use doorzet_domain::Oin;
use doorzet_mesh::client::ClientTls;
use doorzet_mesh::config::{Jwt, Limits, Listen, Telemetry};
use doorzet_node::config::{CoordinatorLink, DirectoryRefresh, NodeConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::pki::{Pki, TestOrg};

/// A running in-process coordinator.
#[derive(Debug)]
pub struct TestCoordinator {
    /// Its organisation.
    pub org: TestOrg,
    /// Its mesh endpoint, `https://127.0.0.1:port`.
    pub endpoint: String,
    /// Its admin address.
    pub admin: SocketAddr,
}

/// A running in-process node.
#[derive(Debug)]
pub struct TestNode {
    /// Its organisation.
    pub org: TestOrg,
    /// Its mesh endpoint.
    pub mesh_endpoint: String,
    /// Its local endpoint.
    pub local_endpoint: String,
    /// Its admin address.
    pub admin: SocketAddr,
}

/// A coordinator and nodes running in this process.
#[derive(Debug)]
pub struct TestMesh {
    /// The PKI every certificate comes from.
    pub pki: Pki,
    /// The coordinator.
    pub coordinator: TestCoordinator,
    /// The nodes, in the order of [`MEMBERS`].
    pub nodes: Vec<TestNode>,
    /// The directory file the coordinator follows.
    pub directory_path: PathBuf,
    /// The directory as last written.
    pub directory: DirectoryFile,
    data: tempfile::TempDir,
    databases: Vec<doorzet_store::testing::TestDatabase>,
    shutdown: CancellationToken,
    coordinator_shutdown: CancellationToken,
    coordinator_config: CoordinatorConfig,
    coordinator_task: Option<tokio::task::JoinHandle<()>>,
    /// The clock the coordinator's deadlines run on; move it forward instead of sleeping.
    pub clock: doorzet_coordinator::clock::Clock,
    node_runs: Vec<NodeRun>,
}

/// A node's configuration, and its task while it runs.
#[derive(Debug)]
struct NodeRun {
    config: NodeConfig,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn spawn_node(
    listeners: doorzet_node::Listeners,
    config: NodeConfig,
    token: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = doorzet_node::serve(listeners, config, token).await {
            panic!("node failed: {e}");
        }
    })
}

/// The ladder the in-process mesh runs (`deploy/regions/local-mesh.toml`).
pub const LADDER: &str = include_str!("../../../deploy/regions/local-mesh.toml");

impl Drop for TestMesh {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let databases = std::mem::take(&mut self.databases);
        if databases.is_empty() {
            return;
        }
        // Dropping a PostgreSQL database is async; do it on a runtime of its own.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    // Give the servers a moment to let go of their connections.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    for db in databases {
                        db.drop().await;
                    }
                });
            }
        })
        .join();
    }
}

/// Where the in-process mesh keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// An SQLite file per server in the data directory.
    Sqlite,
    /// A fresh PostgreSQL database per server on `DOORZET_TEST_DATABASE_URL`.
    Postgres,
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

/// `org`'s token key as the directory file lists it.
pub fn key_entry(org: &TestOrg) -> KeyEntry {
    let jwk = org.jwk();
    KeyEntry {
        kid: jwk.kid.clone(),
        alg: jwk.alg.clone(),
        kty: jwk.kty.clone(),
        crv: jwk.crv.clone(),
        x: jwk.x.clone(),
        y: String::new(),
    }
}

/// Origin of the in-process mesh's audit log.
pub const AUDIT_ORIGIN: &str = "test.example/doorzet/audit";

/// How fast the in-process mesh notices directory changes.
pub const REFRESH: Duration = Duration::from_millis(150);

impl TestMesh {
    /// Starts a coordinator and `nodes` nodes (at most five) on SQLite, and waits until every
    /// node has its directory.
    pub async fn start(nodes: usize) -> Self {
        Self::start_with(nodes, |_| {}).await
    }

    /// Like [`TestMesh::start`], letting the caller adjust each node's configuration.
    pub async fn start_with(nodes: usize, adjust: impl Fn(&mut NodeConfig)) -> Self {
        Self::start_on(Storage::Sqlite, nodes, adjust).await
    }

    /// Starts a coordinator and `nodes` nodes whose state is kept in `storage`. PostgreSQL needs
    /// `DOORZET_TEST_DATABASE_URL` (as `scripts/test` sets it); without it this panics rather than
    /// pass without the real server.
    pub async fn start_on(
        storage: Storage,
        nodes: usize,
        adjust: impl Fn(&mut NodeConfig),
    ) -> Self {
        assert!(nodes <= MEMBERS.len(), "at most {} nodes", MEMBERS.len());
        let pki = Pki::new();
        let data = tempfile::tempdir().expect("tempdir");
        let mut databases = Vec::new();
        let coordinator_url =
            storage_url(storage, &data.path().join("coordinator.db"), &mut databases).await;
        let shutdown = CancellationToken::new();

        let coordinator_org = pki.org(COORDINATOR.org.parse().expect("oin"), COORDINATOR.name);
        let (c_mesh, c_mesh_addr) = bind().await;
        let (c_admin, c_admin_addr) = bind().await;
        let coordinator_endpoint = format!("https://{c_mesh_addr}");

        let mut node_parts = Vec::new();
        for demo in MEMBERS.iter().take(nodes) {
            let org = pki.org(demo.org.parse().expect("oin"), demo.name);
            let (mesh, mesh_addr) = bind().await;
            let (local, local_addr) = bind().await;
            let (admin, admin_addr) = bind().await;
            node_parts.push((
                demo, org, mesh, mesh_addr, local, local_addr, admin, admin_addr,
            ));
        }

        let directory = DirectoryFile {
            region: "test-region".into(),
            coordinator: CoordinatorEntry {
                org_id: coordinator_org.org.to_string(),
                name: COORDINATOR.name.into(),
                mesh_endpoint: coordinator_endpoint.clone(),
                signing_keys: vec![key_entry(&coordinator_org)],
            },
            members: node_parts
                .iter()
                .map(|(demo, org, _, mesh_addr, ..)| MemberEntry {
                    org_id: org.org.to_string(),
                    kind: demo.kind.as_str().into(),
                    name: demo.name.into(),
                    mesh_endpoint: format!("https://{mesh_addr}"),
                    signing_keys: vec![key_entry(org)],
                })
                .collect(),
            revoked: Revoked::default(),
            confirm_removals: None,
        };
        let directory_path = data.path().join("directory.toml");
        std::fs::write(&directory_path, toml::to_string(&directory).expect("toml"))
            .expect("write directory");

        let audit_key = data.path().join("audit.key");
        doorzet_ctl::pki::write_private(
            &audit_key,
            doorzet_ctl::pki::TokenKey::generate()
                .expect("audit key")
                .private_pem
                .as_bytes(),
        )
        .expect("write audit key");
        let ladder_path = data.path().join("ladder.toml");
        std::fs::write(&ladder_path, LADDER).expect("write ladder");
        let grant_key = data.path().join("grant.key");
        doorzet_ctl::pki::write_private(
            &grant_key,
            coordinator_org.token_key.private_pem.as_bytes(),
        )
        .expect("write grant key");
        let config = CoordinatorConfig {
            escalations: Some(doorzet_coordinator::config::EscalationsConfig {
                ladder: ladder_path,
                grant_signing_key: grant_key,
                grant_key_id: coordinator_org.jwk().kid.clone(),
                grant_validity: Duration::from_secs(7 * 24 * 3600),
                participant_lookup_timeout: Duration::from_secs(2),
                mandate_cache_ttl: Duration::from_secs(30),
                notify_timeout: Duration::from_secs(2),
                max_retry_interval: Duration::from_secs(2),
            }),
            org: coordinator_org.org,
            audit: doorzet_coordinator::config::AuditConfig {
                signing_key: audit_key,
                previous_signing_key: None,
                origin: AUDIT_ORIGIN.into(),
                max_clock_skew: Duration::from_secs(300),
                max_append_delay: Duration::from_secs(7 * 24 * 3600),
                append_rate: 50,
                append_burst: 500,
            },
            tls: coordinator_org.tls.clone(),
            mesh: Listen {
                listen: c_mesh_addr,
            },
            admin: Listen {
                listen: c_admin_addr,
            },
            directory: DirectorySource {
                file: directory_path.clone(),
                reload_interval: Duration::from_millis(50),
                max_removed_share: 0.5,
            },
            storage: doorzet_store::StorageConfig {
                url: coordinator_url,
            },
            limits: Limits::default(),
            jwt: Jwt::default(),
            telemetry: Telemetry::default(),
        };
        let listeners = doorzet_coordinator::Listeners {
            mesh: c_mesh,
            admin: c_admin,
        };
        let coordinator_shutdown = shutdown.child_token();
        let coordinator_config = config.clone();
        let clock = doorzet_coordinator::clock::Clock::default();
        let coordinator_task = spawn_coordinator(
            listeners,
            config,
            coordinator_shutdown.clone(),
            clock.clone(),
        );

        let mut running = Vec::new();
        let mut node_runs = Vec::new();
        for (demo, org, mesh, mesh_addr, local, local_addr, admin, admin_addr) in node_parts {
            let mut config = NodeConfig {
                org: org.org,
                tls: org.tls.clone(),
                mesh: Listen { listen: mesh_addr },
                local: Listen { listen: local_addr },
                admin: Listen { listen: admin_addr },
                coordinator: CoordinatorLink {
                    endpoint: coordinator_endpoint.clone(),
                    org: coordinator_org.org,
                },
                directory: DirectoryRefresh {
                    refresh_interval: REFRESH,
                    max_age: Duration::from_secs(3600),
                },
                audit: doorzet_node::config::AuditWatch {
                    check_interval: REFRESH,
                    sweep: 64,
                    ..Default::default()
                },
                access: Default::default(),
                ladder: Default::default(),
                cases: Default::default(),
                storage: doorzet_store::StorageConfig {
                    url: storage_url(
                        storage,
                        &data.path().join(format!("{}.db", demo.slug)),
                        &mut databases,
                    )
                    .await,
                },
                limits: Limits::default(),
                jwt: Jwt::default(),
                telemetry: Telemetry::default(),
            };
            adjust(&mut config);
            let listeners = doorzet_node::Listeners { mesh, local, admin };
            let token = shutdown.child_token();
            node_runs.push(NodeRun {
                config: config.clone(),
                shutdown: token.clone(),
                task: Some(spawn_node(listeners, config, token)),
            });
            running.push(TestNode {
                org,
                mesh_endpoint: format!("https://{mesh_addr}"),
                local_endpoint: format!("https://{local_addr}"),
                admin: admin_addr,
            });
        }

        let mesh = Self {
            pki,
            coordinator: TestCoordinator {
                org: coordinator_org,
                endpoint: coordinator_endpoint,
                admin: c_admin_addr,
            },
            nodes: running,
            directory_path,
            directory,
            data,
            databases,
            shutdown,
            coordinator_shutdown,
            coordinator_config,
            coordinator_task: Some(coordinator_task),
            clock,
            node_runs,
        };
        for node in &mesh.nodes {
            let org = &node.org;
            let endpoint = node.mesh_endpoint.clone();
            crate::eventually(Duration::from_secs(20), "node SERVING", || {
                let endpoint = endpoint.clone();
                async move { (health(org, &endpoint).await == Some(1)).then_some(()) }
            })
            .await;
        }
        mesh
    }

    /// Rewrites the directory file the coordinator follows.
    pub fn write_directory(&mut self, change: impl FnOnce(&mut DirectoryFile)) {
        change(&mut self.directory);
        let text = toml::to_string(&self.directory).expect("toml");
        // Write and rename, as an editor would, so the coordinator never reads half a file.
        let tmp = self.data.path().join("directory.toml.tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &self.directory_path).expect("rename");
    }

    /// Returns the coordinator's storage URL (an SQLite file or a PostgreSQL database).
    pub fn coordinator_storage_url(&self) -> &str {
        &self.coordinator_config.storage.url
    }

    /// Returns node `i`'s storage URL (an SQLite file or a PostgreSQL database).
    pub fn node_storage_url(&self, i: usize) -> &str {
        &self.node_runs[i].config.storage.url
    }

    /// Returns the data directory (databases, directory file).
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }

    /// Stops the coordinator only, as when the ZVH is unreachable.
    pub fn stop_coordinator(&self) {
        self.coordinator_shutdown.cancel();
    }

    /// Stops the coordinator, lets `meanwhile` change its files (the database is
    /// `data_dir()/coordinator.db`), and starts it again on the same addresses.
    pub async fn restart_coordinator(&mut self, meanwhile: impl FnOnce(&std::path::Path)) {
        self.restart_coordinator_with(|data, _| meanwhile(data))
            .await;
    }

    /// Like [`TestMesh::restart_coordinator`], letting `meanwhile` change the configuration too
    /// (kept for later restarts).
    pub async fn restart_coordinator_with(
        &mut self,
        meanwhile: impl FnOnce(&std::path::Path, &mut CoordinatorConfig),
    ) {
        self.coordinator_shutdown.cancel();
        if let Some(task) = self.coordinator_task.take() {
            let _ = task.await;
        }
        meanwhile(self.data.path(), &mut self.coordinator_config);
        let config = self.coordinator_config.clone();
        let mesh = rebind(config.mesh.listen).await;
        let admin = rebind(config.admin.listen).await;
        self.coordinator_shutdown = self.shutdown.child_token();
        self.coordinator_task = Some(spawn_coordinator(
            doorzet_coordinator::Listeners { mesh, admin },
            config,
            self.coordinator_shutdown.clone(),
            self.clock.clone(),
        ));
    }

    /// Starts another coordinator on the same database and files (a ZVH that runs two), on
    /// listeners of its own; returns its mesh endpoint and the token that stops it. The nodes keep
    /// calling the first; clients may call either.
    pub async fn start_second_coordinator(&self) -> (String, CancellationToken) {
        let (mesh, mesh_addr) = bind().await;
        let (admin, admin_addr) = bind().await;
        let mut config = self.coordinator_config.clone();
        config.mesh.listen = mesh_addr;
        config.admin.listen = admin_addr;
        let token = self.shutdown.child_token();
        spawn_coordinator(
            doorzet_coordinator::Listeners { mesh, admin },
            config,
            token.clone(),
            self.clock.clone(),
        );
        let endpoint = format!("https://{mesh_addr}");
        let org = &self.nodes[0].org;
        crate::eventually(
            Duration::from_secs(40),
            "second coordinator SERVING",
            || {
                let endpoint = endpoint.clone();
                async move { (health(org, &endpoint).await == Some(1)).then_some(()) }
            },
        )
        .await;
        (endpoint, token)
    }

    /// Stops node `i` (its listeners close; its database stays), as when a partner's node is down.
    pub async fn stop_node(&mut self, i: usize) {
        let run = &mut self.node_runs[i];
        run.shutdown.cancel();
        if let Some(task) = run.task.take() {
            let _ = task.await;
        }
    }

    /// Starts node `i` again on the same addresses and database, and waits until it serves.
    pub async fn start_node(&mut self, i: usize) {
        let run = &mut self.node_runs[i];
        let config = run.config.clone();
        let listeners = doorzet_node::Listeners {
            mesh: rebind(config.mesh.listen).await,
            local: rebind(config.local.listen).await,
            admin: rebind(config.admin.listen).await,
        };
        run.shutdown = self.shutdown.child_token();
        run.task = Some(spawn_node(listeners, config, run.shutdown.clone()));
        let node = &self.nodes[i];
        let (org, endpoint) = (&node.org, node.mesh_endpoint.clone());
        crate::eventually(Duration::from_secs(20), "node SERVING again", || {
            let endpoint = endpoint.clone();
            async move { (health(org, &endpoint).await == Some(1)).then_some(()) }
        })
        .await;
    }

    /// Kills the coordinator without a drain (its task is aborted wherever it is, as SIGKILL would
    /// stop the process) and starts it again on the same addresses, database and clock.
    pub async fn crash_and_restart_coordinator(&mut self) {
        if let Some(task) = self.coordinator_task.take() {
            task.abort();
            let _ = task.await;
        }
        self.restart_coordinator(|_| {}).await;
    }

    /// Stops every server.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

fn spawn_coordinator(
    listeners: doorzet_coordinator::Listeners,
    config: CoordinatorConfig,
    token: CancellationToken,
    clock: doorzet_coordinator::clock::Clock,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = doorzet_coordinator::serve_with_clock(listeners, config, token, clock).await
        {
            panic!("coordinator failed: {e}");
        }
    })
}

/// Returns the storage URL of one server: an SQLite file at `path`, or a fresh PostgreSQL database
/// (kept in `databases`, to be dropped with the mesh).
async fn storage_url(
    storage: Storage,
    path: &std::path::Path,
    databases: &mut Vec<doorzet_store::testing::TestDatabase>,
) -> String {
    match storage {
        Storage::Sqlite => format!("sqlite:{}", path.display()),
        Storage::Postgres => {
            let db = doorzet_store::testing::TestDatabase::postgres()
                .await
                .expect("DOORZET_TEST_DATABASE_URL must name the test PostgreSQL (scripts/test sets it)");
            let url = db.url().to_owned();
            databases.push(db);
            url
        }
    }
}

async fn rebind(addr: SocketAddr) -> TcpListener {
    for _ in 0..200 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{addr} did not become free");
}

/// Opens a channel to `endpoint` presenting `org`'s certificate (fixed, not reloading).
pub fn channel_as(org: &TestOrg, endpoint: &str) -> Channel {
    channel_with(ClientTls::Fixed(org.client_config()), endpoint)
}

/// Opens a channel to `endpoint` with any client TLS configuration.
pub fn channel_with(tls: ClientTls, endpoint: &str) -> Channel {
    doorzet_mesh::client::channel(tls, endpoint, None, Duration::from_secs(5)).expect("channel")
}

/// Returns the overall health status at `endpoint` as `org`, or `None` when it cannot be asked.
pub async fn health(org: &TestOrg, endpoint: &str) -> Option<i32> {
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel_as(org, endpoint));
    client
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

/// Adds `Bearer token` to a request.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    request
}

/// Fetches `path` from an admin listener over plain HTTP/1.1; returns the whole response.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

/// Returns an organisation id that no member has.
pub fn stranger() -> Oin {
    "00000001999000009999".parse().expect("oin")
}
