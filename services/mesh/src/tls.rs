//! Certificate loading and rustls configurations that follow the files: a changed certificate, key
//! or trust-anchor file (or SIGHUP) swaps in new configs for new connections, while live connections
//! keep the config they were made with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::config::CrlStalePolicy;
use tokio_util::sync::CancellationToken;

use crate::MeshError;
use crate::config::TlsFiles;

/// Returns the crypto provider every doorzet TLS config uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The parsed contents of a [`TlsFiles`] set.
#[derive(Debug)]
pub struct TlsMaterial {
    /// Certificate chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Private key of the leaf.
    pub key: PrivateKeyDer<'static>,
    /// Trust anchors.
    pub roots: Arc<RootCertStore>,
    /// Revocation lists of the trust anchors.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// The earliest next update of those lists.
    pub crl_next_update: Option<SystemTime>,
    /// What a stale list means.
    pub crl_stale: CrlStalePolicy,
}

impl TlsMaterial {
    /// Reads and parses the three PEM files; errors name the file.
    pub fn load(files: &TlsFiles) -> Result<Self, MeshError> {
        let chain = read_certs(&files.cert)?;
        let key_pem = read(&files.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| MeshError::Pem {
            path: files.key.clone(),
            reason: format!("no private key: {e}"),
        })?;
        let mut roots = RootCertStore::empty();
        for ca in read_certs(&files.ca)? {
            roots.add(ca).map_err(|e| MeshError::Pem {
                path: files.ca.clone(),
                reason: format!("unusable trust anchor: {e}"),
            })?;
        }
        let mut crls = Vec::new();
        let mut crl_next_update: Option<SystemTime> = None;
        for path in &files.crls {
            let bytes = read(path)?;
            let bad = |reason: String| MeshError::Pem {
                path: path.clone(),
                reason,
            };
            let ders: Vec<CertificateRevocationListDer<'static>> = if bytes.starts_with(b"-----") {
                CertificateRevocationListDer::pem_slice_iter(&bytes)
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(format!("bad revocation list: {e}")))?
            } else {
                vec![CertificateRevocationListDer::from(bytes)]
            };
            if ders.is_empty() {
                return Err(bad("no revocation list found".into()));
            }
            for der in ders {
                let next = crl_next_update_of(&der).map_err(bad)?;
                crl_next_update = Some(crl_next_update.map_or(next, |n: SystemTime| n.min(next)));
                crls.push(der);
            }
        }
        Ok(Self {
            chain,
            key,
            roots: Arc::new(roots),
            crls,
            crl_next_update,
            crl_stale: files.crl_stale,
        })
    }

    /// Builds the config of a mesh listener: a client certificate chaining to the trust anchors is
    /// required.
    pub fn mesh_server_config(&self) -> Result<ServerConfig, MeshError> {
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider());
        if !self.crls.is_empty() {
            builder = builder
                .with_crls(self.crls.clone())
                .only_check_end_entity_revocation()
                .allow_unknown_revocation_status();
            if self.crl_stale == CrlStalePolicy::Refuse {
                builder = builder.enforce_revocation_expiration();
            }
        }
        let verifier = builder.build()?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// Builds the config of a local listener: server authentication only; callers identify with a
    /// token.
    pub fn local_server_config(&self) -> Result<ServerConfig, MeshError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// Builds the config of a client: presents this organisation's certificate and verifies the
    /// server against the trust anchors.
    pub fn client_config(&self) -> Result<ClientConfig, MeshError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?;
        let builder = if self.crls.is_empty() {
            builder.with_root_certificates(self.roots.clone())
        } else {
            let mut verifier =
                WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider())
                    .with_crls(self.crls.clone())
                    .only_check_end_entity_revocation()
                    .allow_unknown_revocation_status();
            if self.crl_stale == CrlStalePolicy::Refuse {
                verifier = verifier.enforce_revocation_expiration();
            }
            builder.with_webpki_verifier(
                verifier
                    .build()
                    .map_err(|e| MeshError::Invalid(format!("tls.crls: {e}")))?,
            )
        };
        let mut config = builder.with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// Reads a revocation list's next update (a list without one never goes stale).
fn crl_next_update_of(der: &CertificateRevocationListDer<'_>) -> Result<SystemTime, String> {
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der)
        .map_err(|e| format!("revocation list does not parse: {e}"))?;
    Ok(crl.next_update().map_or(
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799),
        |t| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.timestamp().max(0) as u64),
    ))
}

/// Builds a client config that trusts the anchors in the PEM file `ca` and presents no
/// certificate: for a node's local listener, where callers identify with a token.
pub fn server_only_client_config(ca: &Path) -> Result<ClientConfig, MeshError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots.add(cert).map_err(|e| MeshError::Pem {
            path: ca.to_owned(),
            reason: format!("unusable trust anchor: {e}"),
        })?;
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn read(path: &Path) -> Result<Vec<u8>, MeshError> {
    std::fs::read(path).map_err(|source| MeshError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads every certificate in a PEM file; an empty file is an error that names it.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, MeshError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| MeshError::Pem {
            path: path.to_owned(),
            reason: format!("bad certificate: {e}"),
        })?;
    if certs.is_empty() {
        return Err(MeshError::Pem {
            path: path.to_owned(),
            reason: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// Checks that the leaf certificate in `material` is `org`'s (when set) and may sign.
fn check_org(
    files: &TlsFiles,
    org: Option<doorzet_domain::Oin>,
    material: &TlsMaterial,
) -> Result<(), MeshError> {
    let Some(org) = org else {
        return Ok(());
    };
    let bad = |reason: String| MeshError::Pem {
        path: files.cert.clone(),
        reason,
    };
    let leaf = material
        .chain
        .first()
        .ok_or_else(|| bad("no certificate".into()))?;
    let actual = crate::identity::oin_from_certificate(leaf).map_err(|e| bad(e.to_string()))?;
    if actual != org {
        return Err(bad(format!(
            "certificate is for organisation {actual}, but this server is configured as {org}"
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp(Vec<Option<(SystemTime, u64)>>);

impl FileStamp {
    fn of(files: &TlsFiles) -> Self {
        let stamp = |p: &PathBuf| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        };
        let mut stamps = vec![stamp(&files.cert), stamp(&files.key), stamp(&files.ca)];
        stamps.extend(files.crls.iter().map(stamp));
        Self(stamps)
    }
}

/// The state of the configured revocation lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrlStatus {
    /// The earliest next update among them.
    pub next_update: SystemTime,
    /// True when that moment has passed.
    pub is_stale: bool,
}

/// rustls configs built from [`TlsFiles`] that are rebuilt when the files change.
#[derive(Debug)]
pub struct ReloadingTls {
    files: TlsFiles,
    org: Option<doorzet_domain::Oin>,
    stamp: std::sync::Mutex<FileStamp>,
    mesh_server: ArcSwap<ServerConfig>,
    local_server: ArcSwap<ServerConfig>,
    client: ArcSwap<ClientConfig>,
    crl_next_update: ArcSwap<Option<SystemTime>>,
}

impl ReloadingTls {
    /// Loads the files; fails (naming the file) when any of them is missing or unusable.
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, MeshError> {
        Self::load_inner(files, None)
    }

    /// Loads the files of organisation `org`'s server: as [`ReloadingTls::load`], and the
    /// certificate (at start and at every reload) must carry `org` and allow signing.
    pub fn load_for(files: TlsFiles, org: doorzet_domain::Oin) -> Result<Arc<Self>, MeshError> {
        Self::load_inner(files, Some(org))
    }

    fn check_org(&self, material: &TlsMaterial) -> Result<(), MeshError> {
        check_org(&self.files, self.org, material)
    }

    fn load_inner(
        files: TlsFiles,
        org: Option<doorzet_domain::Oin>,
    ) -> Result<Arc<Self>, MeshError> {
        let stamp = FileStamp::of(&files);
        let material = TlsMaterial::load(&files)?;
        check_org(&files, org, &material)?;
        Ok(Arc::new(Self {
            org,
            mesh_server: ArcSwap::from_pointee(material.mesh_server_config()?),
            local_server: ArcSwap::from_pointee(material.local_server_config()?),
            client: ArcSwap::from_pointee(material.client_config()?),
            crl_next_update: ArcSwap::from_pointee(material.crl_next_update),
            stamp: std::sync::Mutex::new(stamp),
            files,
        }))
    }

    /// Returns the current config of mesh listeners.
    pub fn mesh_server(&self) -> Arc<ServerConfig> {
        self.mesh_server.load_full()
    }

    /// Returns the current config of local listeners.
    pub fn local_server(&self) -> Arc<ServerConfig> {
        self.local_server.load_full()
    }

    /// Returns the current client config.
    pub fn client(&self) -> Arc<ClientConfig> {
        self.client.load_full()
    }

    /// Returns the revocation lists' state at `now`: `None` when none is configured, otherwise
    /// whether the earliest next update has passed.
    pub fn crl_status(&self, now: SystemTime) -> Option<CrlStatus> {
        let next_update = (**self.crl_next_update.load())?;
        Some(CrlStatus {
            next_update,
            is_stale: now > next_update,
        })
    }

    /// Re-reads the files and swaps in new configs. On error the old configs stay in force.
    pub fn reload(&self) -> Result<(), MeshError> {
        let stamp = FileStamp::of(&self.files);
        let material = TlsMaterial::load(&self.files)?;
        self.check_org(&material)?;
        let mesh = material.mesh_server_config()?;
        let local = material.local_server_config()?;
        let client = material.client_config()?;
        self.mesh_server.store(Arc::new(mesh));
        self.local_server.store(Arc::new(local));
        self.client.store(Arc::new(client));
        self.crl_next_update
            .store(Arc::new(material.crl_next_update));
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        Ok(())
    }

    /// Reloads when a file's modification time or size changed since the last load.
    pub fn reload_if_changed(&self) -> Result<bool, MeshError> {
        let now = FileStamp::of(&self.files);
        let changed = *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) != now;
        if changed {
            self.reload()?;
        }
        Ok(changed)
    }

    /// Spawns the task that polls the files every `reload_interval` and reloads on SIGHUP, until
    /// `shutdown`.
    pub fn spawn_watcher(self: &Arc<Self>, shutdown: CancellationToken) {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(this.files.reload_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                let forced = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => false,
                    Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                };
                let result = if forced {
                    this.reload().map(|()| true)
                } else {
                    this.reload_if_changed()
                };
                match result {
                    Ok(true) => {
                        tracing::info!(cert = %this.files.cert.display(), "TLS certificate and trust anchors reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "TLS reload failed; keeping the previous certificate")
                    }
                }
            }
        });
    }
}
