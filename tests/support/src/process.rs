//! A coordinator as a real process, for tests of process behaviour (SIGTERM, kill -9, restart):
//! its PKI, directory (one member: the municipality), audit key and configuration in a temporary
//! directory, on ports chosen once so a restart comes back on the same address.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use doorzet_ctl::local_mesh::{COORDINATOR, MEMBERS, find_binary};
use tonic::transport::Channel;

use crate::mesh::channel_as;
use crate::pki::{Pki, TestOrg};

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
    pub config: std::path::PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

/// Returns two distinct free loopback addresses (both held until chosen, so they differ).
fn free_addrs() -> (SocketAddr, SocketAddr) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let (a, b) = (bind(), bind());
    (a.local_addr().expect("addr"), b.local_addr().expect("addr"))
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
                "region = \"test\"\n[coordinator]\norg_id = \"{}\"\nname = \"c\"\nmesh_endpoint = \"https://{mesh_addr}\"\n\n[[members]]\norg_id = \"{}\"\nkind = \"municipality\"\nname = \"{}\"\nmesh_endpoint = \"https://127.0.0.1:1\"\nsigning_keys = [{{ kid = \"{}\", alg = \"EdDSA\", kty = \"OKP\", crv = \"Ed25519\", x = \"{}\" }}]\n",
                org.org, member.org, MEMBERS[0].name, jwk.kid, jwk.x
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
            dir,
            child: None,
        }
    }

    /// Starts the binary (standard error captured).
    pub fn start(&mut self) {
        let child = Command::new(find_binary("doorzet-coordinator", None).expect("binary"))
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn coordinator");
        self.child = Some(child);
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits for the exit; returns the status and what it wrote to stderr.
    pub async fn terminate(&mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("signal");
        let status = crate::eventually(Duration::from_secs(30), "coordinator exit", || {
            let exited = child.try_wait().expect("wait");
            async move { exited }
        })
        .await;
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        (status, stderr)
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
