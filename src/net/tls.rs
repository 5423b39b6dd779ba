//! Certificates and mutual TLS for node-to-node traffic.
//!
//! Every cluster has its own certificate authority ([`ClusterCa`], made by
//! `ringdb certs init`). Each node holds a certificate issued by it
//! ([`NodeCert`], `ringdb certs node NAME`) and trusts nothing else: a
//! connection is accepted only if the peer presents a certificate chained to
//! the cluster CA, in both directions (the server requires a client
//! certificate). Peers negotiate the ALPN [`ALPN`].
//!
//! Nodes are addressed by IP and port, so a dialer does not check that the
//! certificate names the address it dialed: it checks the cluster-wide name
//! [`PEER_SERVER_NAME`], which every node certificate carries. Membership in
//! the cluster is what is authenticated; any node of the cluster may answer
//! at any address. Node certificates also carry the node's name and any IPs
//! and DNS names given, for operators and for a later, stricter check.
//!
//! Files (PEM): a CA directory holds `ca.pem` and `ca.key`; a node directory
//! holds `ca.pem` (the CA certificate only), `node.pem` and `node.key`.
//! Private keys are written with mode 0600. Existing files are never
//! overwritten unless asked.
//!
//! One crypto provider is used throughout: ring (see [`crypto_provider`]).
//!
//! The node's private key also seeds its QUIC endpoints' stateless-reset
//! and connection-ID keys ([`RestartKeys`]), so that a node restarted on
//! the same address tells its peers at once that their connections to the
//! old process are gone.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::NetError;

/// ALPN protocol of node-to-node traffic.
pub const ALPN: &[u8] = b"ringdb-peer/1";

/// The TLS server name every node certificate carries and every dialer
/// checks.
pub const PEER_SERVER_NAME: &str = "ringdb-node";

/// File name of the CA certificate (in CA and node directories).
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key (CA directory only).
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of a node certificate.
pub const NODE_CERT_FILE: &str = "node.pem";
/// File name of a node private key.
pub const NODE_KEY_FILE: &str = "node.key";

const CA_COMMON_NAME: &str = "ringdb cluster CA";
const CA_VALID_YEARS: i32 = 20;
const NODE_VALID_YEARS: i32 = 10;

/// Errors of making, saving and loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// An I/O error on a named file or directory.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file exists and overwriting was not asked for.
    #[error("{path} already exists (use --force to overwrite)")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A file that does not hold what it should (PEM, certificate, key).
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Generating or signing a certificate failed, or its input is invalid
    /// (for example a node name that is not a valid DNS name).
    #[error("cannot generate certificate: {reason}")]
    Generate {
        /// What failed.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn gen_err(e: impl fmt::Display) -> CertError {
    CertError::Generate {
        reason: e.to_string(),
    }
}

/// The crypto provider of all TLS in ringdb: ring.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The current calendar year (UTC), approximately: good enough to set
/// certificate validity with a year of margin.
fn current_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + i32::try_from(secs / 31_556_952).unwrap_or(0)
}

fn validity(params: &mut CertificateParams, years: i32) {
    let year = current_year();
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + years, 1, 1);
}

/// The CA's parameters. Deterministic, so that an issuer can be rebuilt from
/// the saved key alone (the issuer name and key identifier must match the
/// CA certificate byte for byte; [`NodeCert::issue`] verifies that they do).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Writes `contents` to `path`, refusing to overwrite unless `force`;
/// private files get mode 0600.
fn write_file(path: &Path, contents: &str, force: bool, private: bool) -> Result<(), CertError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            CertError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            CertError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    file.write_all(contents.as_bytes()).map_err(io_err(path))?;
    file.sync_all().map_err(io_err(path))
}

/// Refuses (before writing anything) if any of `paths` exists and not
/// `force`, so a refused command leaves no half-written set of files.
fn check_absent(paths: &[&Path], force: bool) -> Result<(), CertError> {
    if force {
        return Ok(());
    }
    for path in paths {
        if path.exists() {
            return Err(CertError::Exists {
                path: path.to_path_buf(),
            });
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(io_err(path))
}

fn parse_cert(path: &Path, pem: &str) -> Result<CertificateDer<'static>, CertError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| CertError::Parse {
        path: path.to_path_buf(),
        reason: format!("no PEM certificate: {e}"),
    })
}

/// What makes a QUIC endpoint restarted on the same address recognisable
/// to the peers of its previous process: the key its stateless-reset
/// tokens are signed with (RFC 9000 section 10.3) and the key its
/// connection IDs are validated with. Both are derived from the node's
/// private key and a purpose (one per endpoint: `"peers"`, `"clients"`), so
/// they are the same after a restart and secret to anyone without the
/// private key.
///
/// Why: a process that died without closing its connections leaves them
/// open at its peers until their idle timeout (10 s between nodes), and
/// requests sent on them meanwhile are lost. Once a new process listens on
/// the address, quinn answers a packet of such a connection with a
/// stateless reset, and the peer drops the connection at once (and dials
/// anew), but only if the new process takes the connection ID for one it
/// could have issued and signs the reset with the old process's key. With
/// quinn's defaults, random keys per process, neither holds: the packets
/// are dropped in silence.
#[derive(Clone)]
pub struct RestartKeys {
    reset: Arc<ring::hmac::Key>,
    connection_ids: u64,
}

impl fmt::Debug for RestartKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RestartKeys").finish_non_exhaustive()
    }
}

impl RestartKeys {
    /// The keys of the endpoint for `purpose` of the node whose private key
    /// (DER) is `private_key_der`.
    pub fn derive(private_key_der: &[u8], purpose: &str) -> RestartKeys {
        let derive = |what: &[u8]| {
            let mut seed = ring::digest::Context::new(&ring::digest::SHA256);
            seed.update(b"ringdb QUIC endpoint key v1\0");
            seed.update(what);
            seed.update(b"\0");
            seed.update(purpose.as_bytes());
            seed.update(b"\0");
            seed.update(private_key_der);
            seed.finish()
        };
        let cid_seed = derive(b"connection ids");
        let mut cid_key = [0u8; 8];
        cid_key.copy_from_slice(&cid_seed.as_ref()[..8]);
        RestartKeys {
            reset: Arc::new(ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                derive(b"stateless reset").as_ref(),
            )),
            connection_ids: u64::from_le_bytes(cid_key),
        }
    }

    /// Sets both keys in an endpoint's configuration.
    pub fn apply(&self, config: &mut quinn::EndpointConfig) {
        let cid_key = self.connection_ids;
        config.reset_key(self.reset.clone()).cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
    }
}

fn parse_key(path: &Path, pem: &str) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| CertError::Parse {
        path: path.to_path_buf(),
        reason: format!("no PEM private key: {e}"),
    })
}

/// The certificate authority of one cluster: its certificate and private
/// key.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Generates a new CA (ECDSA P-256, valid for 20 years).
    pub fn generate() -> Result<ClusterCa, CertError> {
        let key = KeyPair::generate().map_err(gen_err)?;
        let mut params = ca_params();
        validity(&mut params, CA_VALID_YEARS);
        let cert = params.self_signed(&key).map_err(gen_err)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
        })
    }

    /// Loads `ca.pem` and `ca.key` from `dir`.
    pub fn load(dir: &Path) -> Result<ClusterCa, CertError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read_file(&cert_path)?;
        let cert_der = parse_cert(&cert_path, &cert_pem)?;
        let key_pem = read_file(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CertError::Parse {
            path: key_path.clone(),
            reason: format!("not a private key rcgen can use: {e}"),
        })?;
        Ok(ClusterCa {
            cert_pem,
            cert_der,
            key,
        })
    }

    /// Saves `ca.pem` and `ca.key` in `dir` (created if missing). Refuses to
    /// overwrite existing files unless `force`. Returns the paths written.
    pub fn save(&self, dir: &Path, force: bool) -> Result<Vec<PathBuf>, CertError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        check_absent(&[&cert_path, &key_path], force)?;
        write_file(&key_path, &self.key.serialize_pem(), force, true)?;
        write_file(&cert_path, &self.cert_pem, force, false)?;
        Ok(vec![cert_path, key_path])
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }
}

/// A node's certificate and private key, issued by a [`ClusterCa`].
#[derive(Clone)]
pub struct NodeCert {
    name: String,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for NodeCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCert")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl NodeCert {
    /// Issues a certificate for node `name` (ECDSA P-256, valid for 10
    /// years, usable as TLS server and client). Its subject alternative
    /// names are [`PEER_SERVER_NAME`], `name`, and the given IPs and DNS
    /// names. `name` must be a valid DNS name (letters, digits, `-`, `.`).
    ///
    /// The new certificate is verified against the CA before it is returned,
    /// so a CA key that does not belong to the CA certificate is reported
    /// here rather than at the first handshake.
    pub fn issue(
        ca: &ClusterCa,
        name: &str,
        ips: &[IpAddr],
        dns_names: &[String],
    ) -> Result<NodeCert, CertError> {
        if !valid_node_name(name) {
            return Err(CertError::Generate {
                reason: format!(
                    "node name {name:?} is not a DNS name: use 1 to 253 letters, digits, '-' and '.', \
                     starting with a letter or digit"
                ),
            });
        }
        let mut names = vec![PEER_SERVER_NAME.to_string(), name.to_string()];
        names.extend(dns_names.iter().cloned());
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        for dns in names {
            if dns.parse::<IpAddr>().is_ok() {
                return Err(CertError::Generate {
                    reason: format!("{dns:?} is an IP address, not a DNS name; pass IPs with --ip"),
                });
            }
            let san = dns.clone().try_into().map_err(|e| CertError::Generate {
                reason: format!("{dns:?} is not a valid DNS name: {e}"),
            })?;
            params.subject_alt_names.push(SanType::DnsName(san));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, NODE_VALID_YEARS);

        let key = KeyPair::generate().map_err(gen_err)?;
        let issuer = Issuer::new(ca_params(), &ca.key);
        let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
        verify_chain(&ca.cert_der, cert.der())?;
        Ok(NodeCert {
            name: name.to_string(),
            ca_pem: ca.cert_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The node name the certificate was issued for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The node's private key, PEM (PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The certificate of the CA that issued it, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Saves `ca.pem` (the CA certificate), `node.pem` and `node.key` in
    /// `dir` (created if missing). Refuses to overwrite existing files
    /// unless `force`. Returns the paths written.
    pub fn save(&self, dir: &Path, force: bool) -> Result<Vec<PathBuf>, CertError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let ca_path = dir.join(CA_CERT_FILE);
        let cert_path = dir.join(NODE_CERT_FILE);
        let key_path = dir.join(NODE_KEY_FILE);
        check_absent(&[&ca_path, &cert_path, &key_path], force)?;
        write_file(&key_path, &self.key_pem, force, true)?;
        write_file(&cert_path, &self.cert_pem, force, false)?;
        write_file(&ca_path, &self.ca_pem, force, false)?;
        Ok(vec![ca_path, cert_path, key_path])
    }

    /// The TLS identity of a node holding this certificate.
    pub fn tls(&self) -> Result<NodeTls, CertError> {
        NodeTls::from_pem(&self.ca_pem, &self.cert_pem, &self.key_pem)
    }
}

/// Whether `name` can be a node name: a DNS name, which is also safe as a
/// directory name.
fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && !name.contains("..")
}

/// Checks that `cert` chains to `ca` and names [`PEER_SERVER_NAME`].
fn verify_chain(
    ca: &CertificateDer<'static>,
    cert: &CertificateDer<'static>,
) -> Result<(), CertError> {
    let roots = root_store(ca).map_err(gen_err)?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        crypto_provider(),
    )
    .build()
    .map_err(gen_err)?;
    let name = ServerName::try_from(PEER_SERVER_NAME).map_err(gen_err)?;
    verifier
        .verify_server_cert(cert, &[], &name, &[], UnixTime::now())
        .map_err(|e| CertError::Generate {
            reason: format!(
                "the issued certificate does not verify against the CA certificate \
                 (is ca.key the key of ca.pem, made by `ringdb certs init`?): {e}"
            ),
        })?;
    Ok(())
}

fn root_store(ca: &CertificateDer<'static>) -> Result<rustls::RootCertStore, NetError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| NetError::Config {
        reason: format!("CA certificate is not usable as a trust anchor: {e}"),
    })?;
    Ok(roots)
}

/// What a node needs for mutual TLS: the cluster CA certificate (the only
/// trust anchor), its own certificate and its private key.
pub struct NodeTls {
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeTls").finish_non_exhaustive()
    }
}

impl Clone for NodeTls {
    fn clone(&self) -> Self {
        NodeTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl NodeTls {
    /// Loads `ca.pem`, `node.pem` and `node.key` from a node directory.
    pub fn load(dir: &Path) -> Result<NodeTls, CertError> {
        let ca_path = dir.join(CA_CERT_FILE);
        let cert_path = dir.join(NODE_CERT_FILE);
        let key_path = dir.join(NODE_KEY_FILE);
        Ok(NodeTls {
            ca: parse_cert(&ca_path, &read_file(&ca_path)?)?,
            cert: parse_cert(&cert_path, &read_file(&cert_path)?)?,
            key: parse_key(&key_path, &read_file(&key_path)?)?,
        })
    }

    /// The [`RestartKeys`] of this node's endpoint for `purpose`.
    pub fn restart_keys(&self, purpose: &str) -> RestartKeys {
        RestartKeys::derive(self.key.secret_der(), purpose)
    }

    /// Builds an identity from PEM text.
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<NodeTls, CertError> {
        Ok(NodeTls {
            ca: parse_cert(Path::new(CA_CERT_FILE), ca_pem)?,
            cert: parse_cert(Path::new(NODE_CERT_FILE), cert_pem)?,
            key: parse_key(Path::new(NODE_KEY_FILE), key_pem)?,
        })
    }

    /// A throw-away identity for node `name` under `ca`, in memory (for
    /// `ringdb dev` and tests).
    pub fn throwaway(ca: &ClusterCa, name: &str) -> Result<NodeTls, CertError> {
        NodeCert::issue(ca, name, &[], &[])?.tls()
    }

    /// The cluster CA certificate this identity trusts.
    pub fn ca_cert(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    /// rustls server configuration: TLS 1.3, ALPN [`ALPN`], and a client
    /// certificate chained to the cluster CA required.
    pub fn rustls_server_config(&self) -> Result<rustls::ServerConfig, NetError> {
        let provider = crypto_provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(root_store(&self.ca)?),
            provider.clone(),
        )
        .build()
        .map_err(config_err)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(config_err)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// rustls client configuration: TLS 1.3, ALPN [`ALPN`], the cluster CA
    /// as the only trust anchor, and this node's certificate as client
    /// certificate.
    pub fn rustls_client_config(&self) -> Result<rustls::ClientConfig, NetError> {
        let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_err)?
            .with_root_certificates(root_store(&self.ca)?)
            .with_client_auth_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(config_err)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// The QUIC server crypto of this identity.
    pub fn quic_server_crypto(
        &self,
    ) -> Result<Arc<quinn::crypto::rustls::QuicServerConfig>, NetError> {
        let config =
            quinn::crypto::rustls::QuicServerConfig::try_from(self.rustls_server_config()?)
                .map_err(config_err)?;
        Ok(Arc::new(config))
    }

    /// The QUIC client crypto of this identity.
    pub fn quic_client_crypto(
        &self,
    ) -> Result<Arc<quinn::crypto::rustls::QuicClientConfig>, NetError> {
        let config =
            quinn::crypto::rustls::QuicClientConfig::try_from(self.rustls_client_config()?)
                .map_err(config_err)?;
        Ok(Arc::new(config))
    }
}

fn config_err(e: impl fmt::Display) -> NetError {
    NetError::Config {
        reason: format!("TLS: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an endpoint with `keys` signs as the reset token of `cid`, and
    /// whether it takes `cid` for one it issued.
    fn behaviour(keys: &RestartKeys, cid: &[u8]) -> (Vec<u8>, bool) {
        let token = ring::hmac::sign(&keys.reset, cid).as_ref().to_vec();
        let mut generator = quinn_proto::HashedConnectionIdGenerator::from_key(keys.connection_ids);
        use quinn_proto::ConnectionIdGenerator;
        let valid = generator
            .validate(&quinn_proto::ConnectionId::new(cid))
            .is_ok();
        // And it takes what it generates itself.
        let own = generator.generate_cid();
        assert!(generator.validate(&own).is_ok());
        (token, valid)
    }

    #[test]
    fn restart_keys_are_the_same_after_a_restart_and_differ_otherwise() {
        let ca = ClusterCa::generate().unwrap();
        let node = NodeTls::throwaway(&ca, "n1").unwrap();
        let other = NodeTls::throwaway(&ca, "n2").unwrap();
        let before = node.restart_keys("peers");
        let mut issuer = quinn_proto::HashedConnectionIdGenerator::from_key(before.connection_ids);
        let cid = {
            use quinn_proto::ConnectionIdGenerator;
            issuer.generate_cid().to_vec()
        };
        let original = behaviour(&before, &cid);
        assert!(original.1, "an endpoint takes its own connection ids");
        // Loaded again from the same key: the same.
        let reloaded = NodeTls {
            ca: node.ca.clone(),
            cert: node.cert.clone(),
            key: node.key.clone_key(),
        };
        assert_eq!(behaviour(&reloaded.restart_keys("peers"), &cid), original);
        // Another purpose or another node: another token, and (with all but
        // negligible odds) a connection id it never issued.
        for keys in [node.restart_keys("clients"), other.restart_keys("peers")] {
            let (token, valid) = behaviour(&keys, &cid);
            assert_ne!(token, original.0);
            assert!(!valid, "a connection id of another key taken as its own");
        }
    }
}
