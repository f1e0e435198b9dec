//! What the realtime tests and benchmark share: a test cluster CA with a node certificate and
//! device certificates, a db-role tenant for the PostgreSQL driver, the realtime server on
//! loopback, a tonic `Ingest` client presenting a device certificate, and an SSE reader.

use berqenas_node_agent::assignment::{
    AccessMode, DbSpec, DbTenant, DbType, Isolation, Lifecycle, PublicDevice, SubscriberKey,
};
use berqenas_node_agent::config::RealtimeConfig;
use berqenas_node_agent::realtime::Realtime;
use berqenas_pki::{ClusterCa, Identity};
use berqenas_proto::realtime::ingest_client::IngestClient;
use hyper_util::rt::TokioIo;
use sha2::Digest;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tonic::transport::{Channel, Endpoint, Uri};

pub struct Pki {
    pub ca: ClusterCa,
    pub node_chain: String,
    pub node_key: String,
}

impl Pki {
    /// A cluster CA and a node certificate for 127.0.0.1.
    pub fn new() -> Self {
        let ca = ClusterCa::generate("realtime-test", 2026).expect("ca");
        let (node_chain, node_key) = Self::leaf(&ca, &Identity::Node(1), &["127.0.0.1".into()]);
        Self { ca, node_chain, node_key }
    }

    fn leaf(ca: &ClusterCa, id: &Identity, names: &[String]) -> (String, String) {
        let kc = berqenas_pki::new_key_and_csr("test").expect("csr");
        let cert = ca.sign_csr(&kc.csr_pem, id, names, SystemTime::now(), Duration::from_secs(3600)).expect("sign");
        (format!("{cert}{}", ca.cert_pem), kc.key_pem)
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        let der = berqenas_pki::first_cert_der(&self.ca.cert_pem).expect("ca der");
        roots.add(rustls::pki_types::CertificateDer::from(der)).expect("root");
        roots
    }

    /// The realtime server's TLS configuration, as the agent builds it from its files.
    pub fn server(&self) -> Arc<rustls::ServerConfig> {
        berqenas_node_agent::realtime::listener::server_config(&self.ca.cert_pem, &self.node_chain, &self.node_key)
            .expect("server config")
    }

    /// A client presenting the certificate of `identity` (None: no certificate), for h2.
    pub fn client(&self, identity: Option<&Identity>) -> Arc<rustls::ClientConfig> {
        self.client_signed_by(&self.ca, identity)
    }

    /// A client trusting this cluster's CA and presenting a certificate `signer` made.
    pub fn client_signed_by(&self, signer: &ClusterCa, identity: Option<&Identity>) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(self.roots());
        let mut config = match identity {
            Some(id) => {
                let (chain, key) = Self::leaf(signer, id, &[]);
                let certs = rustls::pki_types::CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("chain");
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
                builder.with_client_auth_cert(certs, key).expect("client cert")
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }

    /// A client for subscribers: no certificate, HTTP/1.1.
    pub fn http_client(&self) -> reqwest::Client {
        http_with(&self.client(None))
    }
}

/// An HTTP/1.1 client with the TLS configuration `tls` (a device certificate, or none): the
/// same certificate and key as an `ingest` client made from it.
pub fn http_with(tls: &Arc<rustls::ClientConfig>) -> reqwest::Client {
    let mut config = (**tls).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder().use_preconfigured_tls(config).build().expect("http client")
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

pub fn device(tenant: &str, id: &str) -> Identity {
    Identity::Device { tenant: tenant.into(), id: id.into() }
}

/// A customer key `bqk_{id}_{secret}` and what the coordinator sends the node for it.
pub fn customer_key(seed: u8) -> (String, SubscriberKey) {
    let id = format!("{seed:02x}").repeat(8);
    let secret = format!("{:02x}", seed.wrapping_add(1)).repeat(32);
    let hash = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
    (format!("bqk_{id}_{secret}"), SubscriberKey { id, secret_hash: hash, expires_at_ms: 0 })
}

/// A device enrolled in public mode with this fingerprint (SHA-256 hex of its MACs and
/// machine id), as the coordinator sends it.
pub fn public_device(id: &str, mac_hashes: &[&str], machine_id_hash: &str) -> PublicDevice {
    PublicDevice {
        id: id.into(),
        mac_hashes: mac_hashes.iter().map(|m| m.to_string()).collect(),
        machine_id_hash: machine_id_hash.into(),
    }
}

/// A running PostgreSQL db-role tenant with realtime devices and keys.
pub fn tenant(name: &str, index: u32, devices: &[&str], keys: &[SubscriberKey], events_per_min: u32) -> DbTenant {
    DbTenant {
        name: name.into(),
        revision: 1,
        lifecycle: Lifecycle::Run,
        index,
        db: DbSpec {
            db_type: DbType::Postgres,
            isolation: Isolation::Schema,
            quota_bytes: 1 << 30,
            connection_limit: 5,
            events_per_min,
            access_mode: AccessMode::Public,
            vpn_subnet: format!("198.18.{index}.0/24"),
            vpn_enabled: false,
            public_api: true,
            ddl_enabled: false,
            password_verifier: String::new(),
            devices: devices.iter().map(|d| d.to_string()).collect(),
            subscriber_keys: keys.to_vec(),
            public_devices: Vec::new(),
        },
    }
}

/// The benchmark's tenant: `bench`, devices `dev-0`…`dev-99`, the key `customer_key(7)`, no
/// practical quota. `bench-realtime serve` serves exactly this.
pub fn bench_tenant() -> DbTenant {
    let names: Vec<String> = (0..100).map(|i| format!("dev-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    tenant("bench", 1, &refs, &[customer_key(7).1], u32::MAX)
}

/// Writes the node's files (`ca.pem`, `node.pem`, `node.key`) into `dir`, as the agent keeps them.
pub fn write_node_files(pki: &Pki, dir: &std::path::Path) {
    std::fs::write(dir.join("ca.pem"), &pki.ca.cert_pem).expect("ca");
    std::fs::write(dir.join("node.pem"), &pki.node_chain).expect("cert");
    std::fs::write(dir.join("node.key"), &pki.node_key).expect("key");
}

/// The realtime role on 127.0.0.1 at a free port, serving until its task is aborted.
pub async fn serve(pki: &Pki, url: &str, tenants: &[DbTenant]) -> (Realtime, u16, tokio::task::JoinHandle<()>) {
    let port = crate::free_port();
    let listen: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let rt = Realtime::new(RealtimeConfig::new(listen), url).expect("realtime");
    rt.set(tenants);
    rt.converge().await;
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    let config = pki.server();
    let server = rt.clone();
    let task = tokio::spawn(async move {
        let tls: berqenas_node_agent::realtime::listener::TlsSource = Arc::new(move || Ok(config.clone()));
        server.serve(listener, tls).await.expect("serve");
    });
    (rt, port, task)
}

/// An `Ingest` client over TLS with `tls` (a device certificate, or none); it connects on
/// first use, so a refused handshake is the first call's error.
pub async fn ingest(port: u16, tls: Arc<rustls::ClientConfig>) -> IngestClient<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{port}")).expect("endpoint");
    let connector = tower::service_fn(move |_: Uri| {
        let tls = tls.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(std::io::Error::other)?;
            let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    IngestClient::new(endpoint.connect_with_connector_lazy(connector))
}

/// One event as a device would make it.
pub fn event(id: &str, kind: &str, payload: &str) -> berqenas_proto::realtime::Event {
    berqenas_proto::realtime::Event {
        id: id.into(),
        r#type: kind.into(),
        payload_json: payload.into(),
        created_at_ms: 0,
    }
}

/// A random UUID (v4 layout).
pub fn uuid() -> String {
    use rand::Rng;
    let b: [u8; 16] = rand::thread_rng().gen();
    let h = hex::encode(b);
    format!("{}-{}-4{}-a{}-{}", &h[..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

/// Reads Server-Sent Events from a response: (id, data) pairs as they arrive.
pub struct SseReader {
    resp: reqwest::Response,
    buf: String,
}

impl SseReader {
    pub fn new(resp: reqwest::Response) -> Self {
        Self { resp, buf: String::new() }
    }

    /// The next event with an id, or None when the stream ends or `timeout` passes.
    pub async fn next(&mut self, timeout: Duration) -> Option<(String, String)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut data) = (None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                match id {
                    Some(id) => return Some((id, data)),
                    None => continue,
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk()).await.ok()?.ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// Verifies a node's realtime port as a device should: the chain to the cluster CA and a
/// `berqenas://node/…` identity; not a host name (node certificates carry no address).
#[derive(Debug)]
pub struct NodeVerifier(pub Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for NodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Ok(_) | Err(rustls::Error::InvalidCertificate(NotValidForName | NotValidForNameContext { .. })) => {}
            Err(e) => return Err(e),
        }
        match berqenas_pki::peer_identity(end_entity) {
            Ok(Identity::Node(_)) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            _ => Err(rustls::Error::General("not a node".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A subscriber's HTTP client for a node whose certificate the cluster CA `ca_pem` signed.
pub fn node_http_client(ca_pem: &str) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    let der = berqenas_pki::first_cert_der(ca_pem).expect("ca der");
    roots.add(rustls::pki_types::CertificateDer::from(der)).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .expect("verifier");
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeVerifier(webpki)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder().use_preconfigured_tls(config).build().expect("http client")
}
