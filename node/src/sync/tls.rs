//! TLS for sync: the county CA, the node's certificate and key, the
//! verifiers, and the peer's identity read from its certificate.

use super::*;

pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(super) struct TlsMaterial {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: RootCertStore,
}

pub(super) fn tls_material(id: &crate::Identity, secrets: &crate::identity::Secrets) -> Result<TlsMaterial> {
    let certs = CertificateDer::pem_slice_iter(id.tls_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("the node certificate is damaged; re-enrol")?;
    let key = PrivateKeyDer::from_pem_slice(secrets.tls_key_pem.as_bytes()).context("the node TLS key is damaged")?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(id.ca_cert_pem.as_bytes()) {
        roots.add(ca.context("the county CA certificate is damaged")?)?;
    }
    Ok(TlsMaterial { certs, key, roots })
}

pub(super) fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("valid idle timeout")));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // Two streams per connection: the events, then the files.
    t.max_concurrent_bidi_streams(2u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    // BBR paces by the measured bottleneck rate instead of halving at every
    // loss: a rural link loses packets at random (3 % is common), which a
    // loss-based controller takes for congestion and crawls.
    t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    // No path-MTU discovery: every packet is at most 1,200 bytes, which
    // every QUIC path carries. The search sent four padded probes each way
    // on every connection (more where a probe is lost, as on LTE and PPPoE
    // paths, which stop below the 1,452 it tries), each acknowledged: a
    // no-op session was 39 datagrams and 16.7 KB instead of 25 and 5.3 KB,
    // on a village's metered link, and 10 % of the hub's CPU for it. What
    // it buys is about a fifth fewer packets for bulk (a batch, a file),
    // whose cost is the store's, not the packets'.
    t.mtu_discovery_config(None);
    Arc::new(t)
}

/// Server side: clients must present a certificate issued by the county CA.
pub(super) fn server_config(
    identity: &crate::Identity,
    secrets: &crate::identity::Secrets,
) -> Result<quinn::ServerConfig> {
    let m = tls_material(identity, secrets)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(m.roots), provider()).build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(m.certs, m.key)?;
    tls.alpn_protocols = alpn_names(&proto::wire::VERSIONS);
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// Accepts a server certificate that chains to the county CA and names a
/// node; which node it is, and whether we may talk to it, is decided after
/// the handshake from that name.
#[derive(Debug)]
pub(super) struct CountyCaVerifier {
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CountyCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        identity_of(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Client side: presents the node's certificate and accepts a server whose
/// certificate chains to the county CA and names a node.
pub fn client_config(identity: &crate::Identity, secrets: &crate::identity::Secrets) -> Result<quinn::ClientConfig> {
    client_config_offering(identity, secrets, &proto::wire::VERSIONS)
}

/// [`client_config`], offering only the sync message format `versions`.
pub fn client_config_offering(
    identity: &crate::Identity,
    secrets: &crate::identity::Secrets,
    versions: &[u8],
) -> Result<quinn::ClientConfig> {
    let m = tls_material(identity, secrets)?;
    let verifier = Arc::new(CountyCaVerifier { roots: m.roots, provider: provider() });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(m.certs, m.key)?;
    tls.alpn_protocols = alpn_names(versions);
    let mut cfg = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// The node id and tier a certificate names.
pub(super) fn identity_of(cert: &CertificateDer<'_>) -> Result<(NodeId, Tier)> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| anyhow!("unreadable certificate: {e:?}"))?;
    let names: Vec<&str> = ee.valid_dns_names().collect();
    names
        .iter()
        .find_map(|n| parse_certificate_name(n))
        .ok_or_else(|| anyhow!("the certificate names no node ({names:?})"))
}

/// The node id and tier the peer's certificate names, and the
/// certificate's SHA-256 (how revocations name it).
pub(super) fn peer_identity(conn: &quinn::Connection) -> Result<(NodeId, Tier, proto::Hash)> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| anyhow!("the peer presented no certificate"))?;
    let cert = certs.first().ok_or_else(|| anyhow!("empty certificate chain"))?;
    let (id, tier) = identity_of(cert)?;
    Ok((id, tier, proto::Hash::of(cert.as_ref())))
}

/// Checks a peer against the topology, the allowed edges and the
/// revocation list.
pub(super) fn check_peer(
    topology: &proto::Topology,
    me: &NodeId,
    id: &NodeId,
    tier: Tier,
    revoked: bool,
) -> Result<()> {
    if topology.tier_of(id) != Some(tier) {
        bail!("the peer's certificate names {id} as a {tier} node, which the topology does not know");
    }
    if revoked {
        bail!(
            "this certificate of node {id} has been revoked by the county; a replacement laptop needs a new enrolment"
        );
    }
    if !proto::sync::allowed_peer(topology, me, id) {
        bail!("{me} does not sync with {id} (a village syncs with its township or the county)");
    }
    Ok(())
}

/// The peer's node id, from its certificate, checked against the topology,
/// the allowed edges and the revocation list.
pub(super) fn authenticate(conn: &quinn::Connection, ledger: &Ledger) -> Result<NodeId> {
    let (id, tier, certificate) = peer_identity(conn)?;
    let revoked = store::certificate_revoked(ledger.store().conn(), &certificate)?;
    check_peer(ledger.topology(), ledger.me(), &id, tier, revoked)?;
    Ok(id)
}
