//! The service binaries as real processes, for tests of process behaviour (SIGTERM, kill -9,
//! restart, file limits, floods): a coordinator with its PKI, directory (one member: the
//! municipality), audit key and configuration in a temporary directory, on ports chosen once so a
//! restart comes back on the same address; and the municipality's node beside it. Standard error is
//! drained while the process runs, so a chatty process never blocks on a full pipe.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use doorzet_ctl::local_mesh::{COORDINATOR, MEMBERS, find_binary};
use tonic::transport::Channel;

use crate::mesh::channel_as;
use crate::pki::{Pki, TestOrg};

/// A running service binary whose standard error is collected as it comes.
#[derive(Debug)]
pub struct Running {
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Running {
    /// Starts `binary --config config` with `env` set (configuration overrides such as
    /// `DOORZET_AUDIT__APPEND_RATE`), under `prlimit --nofile=N` when `file_limit` is set.
    pub fn spawn(
        binary: &str,
        config: &Path,
        env: &[(&str, &str)],
        file_limit: Option<u64>,
    ) -> Self {
        let binary = find_binary(binary, None).expect("binary");
        let mut command = match file_limit {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let mut child = command
            .arg("--config")
            .arg(config)
            .env("DOORZET_TELEMETRY__LOG_FILTER", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn service binary");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("stderr pipe");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Self { child, stderr }
    }

    /// Returns what the process wrote to standard error so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns the exit status once the process has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        crate::eventually(timeout, "process exit", || {
            let exited = self.try_wait();
            async move { exited }
        })
        .await
    }

    /// Sends SIGTERM and waits for the exit; returns the status and what it wrote to stderr.
    pub async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("signal");
        let status = self.wait_exit(Duration::from_secs(30)).await;
        // The drain thread sees EOF once the process is gone.
        crate::eventually(Duration::from_secs(5), "stderr closed", || {
            let done = std::sync::Arc::strong_count(&self.stderr) == 1;
            async move { done.then_some(()) }
        })
        .await;
        let stderr = self.stderr();
        (status, stderr)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A coordinator binary with its files.
#[derive(Debug)]
pub struct CoordinatorProcess {
    /// The PKI.
    pub pki: Pki,
    /// The coordinator's organisation.
    pub org: TestOrg,
    /// The one member (the municipality).
    pub member: TestOrg,
    /// Mesh listener address.
    pub mesh_addr: SocketAddr,
    /// Configuration file.
    pub config: PathBuf,
    /// The directory file.
    pub directory: PathBuf,
    /// Admin listener address.
    pub admin_addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Running>,
}

/// Returns two distinct free loopback addresses, from outside the ephemeral range
/// ([`doorzet_ctl::local_mesh::PortPool`]).
fn free_addrs() -> (SocketAddr, SocketAddr) {
    let mut pool = doorzet_ctl::local_mesh::PortPool::default();
    let mut addr = || SocketAddr::from(([127, 0, 0, 1], pool.take().expect("free port")));
    (addr(), addr())
}

impl CoordinatorProcess {
    /// Writes the files; `extra` is appended to the configuration (e.g. a `[telemetry]` table).
    pub fn new(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = Pki::new();
        let org = pki.org(COORDINATOR.org.parse().expect("oin"), COORDINATOR.name);
        let member = pki.org(MEMBERS[0].org.parse().expect("oin"), MEMBERS[0].name);
        let (mesh_addr, admin_addr) = free_addrs();
        let jwk = member.jwk();
        let directory = dir.path().join("directory.toml");
        std::fs::write(
            &directory,
            format!(
                "region = \"test\"\n[coordinator]\norg_id = \"{}\"\nname = \"c\"\nmesh_endpoint = \"https://{mesh_addr}\"\nsigning_keys = [{{ kid = \"{}\", alg = \"EdDSA\", kty = \"OKP\", crv = \"Ed25519\", x = \"{}\" }}]\n\n[[members]]\norg_id = \"{}\"\nkind = \"municipality\"\nname = \"{}\"\nmesh_endpoint = \"https://127.0.0.1:1\"\nsigning_keys = [{{ kid = \"{}\", alg = \"EdDSA\", kty = \"OKP\", crv = \"Ed25519\", x = \"{}\" }}]\n",
                org.org, org.jwk().kid, org.jwk().x, member.org, MEMBERS[0].name, jwk.kid, jwk.x
            ),
        )
        .expect("directory");
        let audit_key = dir.path().join("audit.key");
        doorzet_ctl::pki::write_private(
            &audit_key,
            doorzet_ctl::pki::TokenKey::generate()
                .expect("key")
                .private_pem
                .as_bytes(),
        )
        .expect("audit key");
        let config = dir.path().join("coordinator.toml");
        std::fs::write(
            &config,
            format!(
                "org = \"{}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n[mesh]\nlisten = \"{mesh_addr}\"\n[admin]\nlisten = \"{admin_addr}\"\n[directory]\nfile = \"{}\"\n[audit]\nsigning_key = \"{}\"\norigin = \"test.example/audit\"\n[storage]\nurl = \"sqlite:{}\"\n{extra}",
                org.org,
                org.tls.cert.display(),
                org.tls.key.display(),
                org.tls.ca.display(),
                directory.display(),
                audit_key.display(),
                dir.path().join("coordinator.db").display(),
            ),
        )
        .expect("config");
        Self {
            pki,
            org,
            member,
            mesh_addr,
            config,
            directory,
            admin_addr,
            dir,
            child: None,
        }
    }

    /// Starts the binary (standard error captured).
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts the binary with configuration overrides in its environment.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        self.child = Some(Running::spawn(
            "doorzet-coordinator",
            &self.config,
            env,
            None,
        ));
    }

    /// Returns the running process.
    pub fn running(&mut self) -> &mut Running {
        self.child.as_mut().expect("running")
    }

    /// Returns the mesh endpoint.
    pub fn endpoint(&self) -> String {
        format!("https://{}", self.mesh_addr)
    }

    /// Returns a channel as the member.
    pub fn member_channel(&self) -> Channel {
        channel_as(&self.member, &self.endpoint())
    }

    /// Waits until health reports SERVING.
    pub async fn wait_serving(&self) {
        let endpoint = self.endpoint();
        crate::eventually(Duration::from_secs(30), "coordinator SERVING", || {
            let endpoint = endpoint.clone();
            async move { (crate::mesh::health(&self.member, &endpoint).await == Some(1)).then_some(()) }
        })
        .await;
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        drop(self.child.take());
    }

    /// Sends SIGTERM and waits for the exit; returns the status and what it wrote to stderr.
    pub async fn terminate(&mut self) -> (std::process::ExitStatus, String) {
        self.child.take().expect("running").terminate().await
    }

    /// Returns the temporary directory.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Returns a `[[members]]` table for `org` as a mental-health institution, to append to a
/// directory file.
pub fn member_entry(org: &TestOrg) -> String {
    let jwk = org.jwk();
    format!(
        "\n[[members]]\norg_id = \"{}\"\nkind = \"mental_health_institution\"\nname = \"GGZ Test\"\nmesh_endpoint = \"https://127.0.0.1:1\"\nsigning_keys = [{{ kid = \"{}\", alg = \"EdDSA\", kty = \"OKP\", crv = \"Ed25519\", x = \"{}\" }}]\n",
        org.org, jwk.kid, jwk.x
    )
}

/// The municipality's node binary, a member of a [`CoordinatorProcess`]'s directory.
#[derive(Debug)]
pub struct NodeProcess {
    /// The organisation (the coordinator's one member).
    pub org: TestOrg,
    /// Mesh listener address.
    pub mesh_addr: SocketAddr,
    /// Local listener address.
    pub local_addr: SocketAddr,
    /// Admin listener address.
    pub admin_addr: SocketAddr,
    /// Configuration file.
    pub config: PathBuf,
    ca: PathBuf,
    _dir: tempfile::TempDir,
    child: Option<Running>,
}

impl NodeProcess {
    /// Writes the node's configuration for `coordinator`'s member; `extra` is appended (further
    /// sections such as `[limits]`, `[directory]` or `[jwt]`).
    pub fn new(coordinator: &CoordinatorProcess, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mesh_addr, local_addr) = free_addrs();
        let (admin_addr, _) = free_addrs();
        let org = coordinator.member.clone();
        let config = dir.path().join("node.toml");
        std::fs::write(
            &config,
            format!(
                "org = \"{}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\nca = \"{}\"\n[mesh]\nlisten = \"{mesh_addr}\"\n[local]\nlisten = \"{local_addr}\"\n[admin]\nlisten = \"{admin_addr}\"\n[coordinator]\nendpoint = \"{}\"\norg = \"{}\"\n[storage]\nurl = \"sqlite:{}\"\n{extra}",
                org.org,
                org.tls.cert.display(),
                org.tls.key.display(),
                org.tls.ca.display(),
                coordinator.endpoint(),
                coordinator.org.org,
                dir.path().join("node.db").display(),
            ),
        )
        .expect("config");
        Self {
            org,
            mesh_addr,
            local_addr,
            admin_addr,
            config,
            ca: coordinator.pki.ca_path(),
            _dir: dir,
            child: None,
        }
    }

    /// Starts the binary, with at most `file_limit` open files when set.
    pub fn start(&mut self, file_limit: Option<u64>) {
        self.start_with_env(&[], file_limit);
    }

    /// Starts the binary with `env` set, with at most `file_limit` open files when set.
    pub fn start_with_env(&mut self, env: &[(&str, &str)], file_limit: Option<u64>) {
        self.child = Some(Running::spawn(
            "doorzet-node",
            &self.config,
            env,
            file_limit,
        ));
    }

    /// Returns the running process.
    pub fn running(&mut self) -> &mut Running {
        self.child.as_mut().expect("running")
    }

    /// Stops the process (SIGKILL).
    pub fn stop(&mut self) {
        drop(self.child.take());
    }

    /// Sends SIGHUP, which makes the node re-read its certificate files now.
    pub fn hangup(&mut self) {
        let pid = self.running().pid();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("SIGHUP");
    }

    /// Returns the local endpoint, `https://127.0.0.1:port`.
    pub fn local_endpoint(&self) -> String {
        format!("https://{}", self.local_addr)
    }

    /// Returns the mesh endpoint.
    pub fn mesh_endpoint(&self) -> String {
        format!("https://{}", self.mesh_addr)
    }

    /// Returns a channel to the local listener (server-authenticated TLS; calls carry a token).
    pub fn local_channel(&self) -> Channel {
        crate::mesh::channel_with(
            doorzet_mesh::client::ClientTls::Fixed(crate::pki::server_only_client_config(&self.ca)),
            &self.local_endpoint(),
        )
    }

    /// Waits until the local listener's health reports SERVING (the directory is in).
    pub async fn wait_serving(&self) {
        crate::eventually(Duration::from_secs(30), "node SERVING", || async {
            let mut client =
                tonic_health::pb::health_client::HealthClient::new(self.local_channel());
            let status = client
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .ok()?
                .into_inner()
                .status;
            (status == 1).then_some(())
        })
        .await;
    }

    /// Returns a good token of a person of the node's organisation.
    pub fn token(&self) -> String {
        self.org.token("emp-0042", "procesregisseur")
    }
}
