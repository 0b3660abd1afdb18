//! TLS for sync: the county CA, the node's certificate and key, the
//! verifiers, and the peer's identity read from its certificate.

use super::*;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::DistinguishedName;
use std::collections::HashMap;

/// ring's provider, AES-128-GCM with SHA-256 first. Both ends are ours
/// and the server takes the client's first choice: rustls's default
/// order puts AES-256-GCM with SHA-384 first, whose key schedule runs
/// on SHA-512 (3 % of the hub's samples in a no-op session), where
/// SHA-256 runs on the processor's own instructions. Every TLS 1.3 suite
/// stays on offer.
pub(super) fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
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
    let verifier = Arc::new(RememberingVerifier::new(verifier));
    let mut tls = server_tls(verifier, m.certs, m.key)?;
    tls.alpn_protocols = alpn_names(&proto::wire::VERSIONS);
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    cfg.transport_config(transport());
    Ok(cfg)
}

/// The server's TLS 1.3 configuration. It picks the suite by its own
/// order ([`provider`]), not the client's: a village of an earlier
/// release offers AES-256-GCM with SHA-384 first, and the hub would pay
/// for it at every session until every village is upgraded.
fn server_tls(
    verifier: Arc<dyn ClientCertVerifier>,
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    tls.ignore_client_order = true;
    Ok(tls)
}

/// How long a verified client certificate is taken as verified: it was
/// checked valid at the start of this span and at its end.
const REMEMBER_CHAIN_FOR: Duration = Duration::from_secs(3600);

/// Most client certificates remembered (a county has 321 nodes, each
/// with one certificate at a time); past it, the expired spans are
/// dropped, or else all.
const CHAINS_REMEMBERED: usize = 4096;

/// A server's client-certificate check that remembers the certificates it
/// has verified. A village syncs every few minutes with the same
/// certificate, and verifying it (parsing it, building its path to the
/// CA, checking the CA's ECDSA signature) was about 7 % of the hub's CPU
/// for a no-op session. A certificate is remembered only when the county
/// CA's verifier accepts it both now and [`REMEMBER_CHAIN_FOR`] from now:
/// its validity is one span of time (the CA's and its own overlapped), so
/// it is valid at every time between, and a remembered one is accepted
/// only at such a time.
/// The rest of the check is not remembered: the handshake's signature (the
/// client holds the certificate's key) is checked every time, and
/// revocation after the handshake (`check_peer`). Only a certificate the
/// CA signed directly is remembered (the county CA issues no
/// intermediates): a chain with intermediates, which a certificate holder
/// could vary at will to fill the memory, is verified every time.
#[derive(Debug)]
pub(super) struct RememberingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// A certificate's hash → the span (Unix seconds) it was verified
    /// valid for.
    verified: Mutex<HashMap<proto::Hash, (u64, u64)>>,
    most: usize,
}

impl RememberingVerifier {
    pub(super) fn new(inner: Arc<dyn ClientCertVerifier>) -> RememberingVerifier {
        Self::remembering_at_most(inner, CHAINS_REMEMBERED)
    }

    fn remembering_at_most(inner: Arc<dyn ClientCertVerifier>, most: usize) -> RememberingVerifier {
        RememberingVerifier { inner, verified: Mutex::new(HashMap::new()), most }
    }
}

impl ClientCertVerifier for RememberingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }
    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if !intermediates.is_empty() {
            return self.inner.verify_client_cert(end_entity, intermediates, now);
        }
        let key = proto::Hash::of(end_entity.as_ref());
        let at = now.as_secs();
        let remembered = self.verified.lock().unwrap_or_else(|p| p.into_inner()).get(&key).copied();
        if matches!(remembered, Some((from, until)) if from <= at && at <= until) {
            return Ok(ClientCertVerified::assertion());
        }
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let until = at.saturating_add(REMEMBER_CHAIN_FOR.as_secs());
        let later = UnixTime::since_unix_epoch(Duration::from_secs(until));
        if self.inner.verify_client_cert(end_entity, intermediates, later).is_ok() {
            let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if verified.len() >= self.most {
                verified.retain(|_, (_, until)| *until >= at);
            }
            if verified.len() >= self.most {
                verified.clear();
            }
            verified.insert(key, (at, until));
        }
        Ok(verified)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
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

/// The SHA-256s a revocation of this certificate may name it by: its own,
/// and those of its other signature forms (`identity::other_signature_forms`),
/// which its holder can make without the CA and the CA's verifier accepts
/// as well: a revoked laptop presenting its certificate so re-encoded is
/// still refused.
pub(super) fn revocation_names(cert: &CertificateDer<'_>) -> Vec<proto::Hash> {
    let mut names = vec![proto::Hash::of(cert.as_ref())];
    names.extend(crate::identity::other_signature_forms(cert.as_ref()).iter().map(|other| proto::Hash::of(other)));
    names
}

/// The node id and tier the peer's certificate names, and the SHA-256s a
/// revocation may name it by ([`revocation_names`]).
pub(super) fn peer_identity(conn: &quinn::Connection) -> Result<(NodeId, Tier, Vec<proto::Hash>)> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or_else(|| anyhow!("the peer presented no certificate"))?;
    let cert = certs.first().ok_or_else(|| anyhow!("empty certificate chain"))?;
    let (id, tier) = identity_of(cert)?;
    Ok((id, tier, revocation_names(cert)))
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
    let (id, tier, names) = peer_identity(conn)?;
    let revoked = store::certificate_revoked(ledger.store().conn(), &names)?;
    check_peer(ledger.topology(), ledger.me(), &id, tier, revoked)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{date_time_ymd, BasicConstraints, CertificateParams, IsCa, KeyPair};
    use std::sync::atomic::AtomicUsize;

    /// Both ends offer AES-128-GCM with SHA-256 first (the server takes
    /// the client's first choice), and still every suite of ring's.
    #[test]
    fn the_provider_offers_aes_128_with_sha_256_first_and_every_suite() {
        let ours: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(ours[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let mut all: Vec<_> =
            rustls::crypto::ring::default_provider().cipher_suites.iter().map(|s| s.suite()).collect();
        let mut sorted = ours.clone();
        all.sort_by_key(|s| u16::from(*s));
        sorted.sort_by_key(|s| u16::from(*s));
        assert_eq!(sorted, all);
    }

    /// The server picks AES-128-GCM with SHA-256 even when the client
    /// offers rustls's default order (a village of an earlier release):
    /// a handshake in memory between the two.
    #[test]
    fn the_server_picks_aes_128_whatever_the_client_offers_first() {
        let ca = ca();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["county.test".to_string()])
            .unwrap()
            .signed_by(&key, &ca.cert, &ca.key)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client_cert = CertificateParams::new(vec!["village.test".to_string()])
            .unwrap()
            .signed_by(&client_key, &ca.cert, &ca.key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        let roots = Arc::new(roots);
        let pkcs8 = |k: &KeyPair| PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(k.serialize_der()));
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider()).build().unwrap();
        let server = server_tls(verifier, vec![cert.der().clone()], pkcs8(&key)).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![client_cert.der().clone()], pkcs8(&client_key))
            .unwrap();
        assert_eq!(client.crypto_provider().cipher_suites[0].suite(), rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
        let mut c = rustls::ClientConnection::new(Arc::new(client), "county.test".try_into().unwrap()).unwrap();
        let mut s = rustls::ServerConnection::new(Arc::new(server)).unwrap();
        while c.is_handshaking() || s.is_handshaking() {
            let mut bytes = Vec::new();
            c.write_tls(&mut bytes).unwrap();
            s.read_tls(&mut &bytes[..]).unwrap();
            s.process_new_packets().unwrap();
            let mut bytes = Vec::new();
            s.write_tls(&mut bytes).unwrap();
            c.read_tls(&mut &bytes[..]).unwrap();
            c.process_new_packets().unwrap();
        }
        assert_eq!(c.negotiated_cipher_suite().unwrap().suite(), rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    }

    /// The county CA's verifier, counting the chains it is asked to verify.
    #[derive(Debug)]
    struct Counting {
        inner: Arc<dyn ClientCertVerifier>,
        calls: AtomicUsize,
    }

    impl ClientCertVerifier for Counting {
        fn root_hint_subjects(&self) -> &[DistinguishedName] {
            self.inner.root_hint_subjects()
        }
        fn verify_client_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            now: UnixTime,
        ) -> Result<ClientCertVerified, rustls::Error> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.inner.verify_client_cert(end_entity, intermediates, now)
        }
        // Not called: these tests verify certificates, not handshakes.
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            unreachable!()
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            unreachable!()
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            unreachable!()
        }
    }

    struct Ca {
        key: KeyPair,
        cert: rcgen::Certificate,
    }

    fn ca() -> Ca {
        ca_of(KeyPair::generate().unwrap())
    }

    fn ca_of(key: KeyPair) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_before = date_time_ymd(2026, 1, 1);
        params.not_after = date_time_ymd(2036, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        Ca { key, cert }
    }

    /// A village's certificate, valid from `from` to `until` (Y, M, D).
    fn issue(ca: &Ca, from: (i32, u8, u8), until: (i32, u8, u8)) -> CertificateDer<'static> {
        let name = crate::identity::certificate_name(&NodeId::new("511421101001"), Tier::Village);
        let mut params = CertificateParams::new(vec![name]).unwrap();
        params.not_before = date_time_ymd(from.0, from.1, from.2);
        params.not_after = date_time_ymd(until.0, until.1, until.2);
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, &ca.cert, &ca.key).unwrap().der().clone()
    }

    fn verifier(ca: &Ca) -> (RememberingVerifier, Arc<Counting>) {
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build().unwrap();
        let counting = Arc::new(Counting { inner, calls: AtomicUsize::new(0) });
        (RememberingVerifier::new(counting.clone()), counting)
    }

    /// Unix seconds of a day at noon (UTC).
    fn day(y: i32, m: u8, d: u8) -> UnixTime {
        let t = date_time_ymd(y, m, d).unix_timestamp() as u64 + 12 * 3600;
        UnixTime::since_unix_epoch(Duration::from_secs(t))
    }

    fn plus(t: UnixTime, secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(t.as_secs() + secs))
    }

    /// A chain the county CA's verifier accepted is accepted again without
    /// being verified, but only within the span it was checked valid for:
    /// a session of the same village minutes later costs no chain check.
    #[test]
    fn a_verified_chain_is_remembered_for_the_span_it_was_checked_for() {
        let ca = ca();
        let cert = issue(&ca, (2026, 1, 1), (2031, 1, 1));
        let (v, calls) = verifier(&ca);
        let t = day(2026, 11, 26);
        v.verify_client_cert(&cert, &[], t).unwrap();
        assert_eq!(calls.calls.load(Ordering::SeqCst), 2, "checked now and at the end of the span");
        v.verify_client_cert(&cert, &[], plus(t, 60)).unwrap();
        v.verify_client_cert(&cert, &[], plus(t, REMEMBER_CHAIN_FOR.as_secs())).unwrap();
        assert_eq!(calls.calls.load(Ordering::SeqCst), 2, "remembered within the span");
        // Before the span, or after it: verified again.
        v.verify_client_cert(&cert, &[], plus(t, REMEMBER_CHAIN_FOR.as_secs() + 1)).unwrap();
        assert_eq!(calls.calls.load(Ordering::SeqCst), 4);
        // A clock set back before the span is not taken from it.
        let earlier = UnixTime::since_unix_epoch(Duration::from_secs(t.as_secs() - 1));
        v.verify_client_cert(&cert, &[], earlier).unwrap();
        assert_eq!(calls.calls.load(Ordering::SeqCst), 6);
        // Another certificate of the same node is a chain of its own.
        let other = issue(&ca, (2026, 1, 1), (2031, 1, 1));
        let before = calls.calls.load(Ordering::SeqCst);
        v.verify_client_cert(&other, &[], plus(t, 60)).unwrap();
        assert!(calls.calls.load(Ordering::SeqCst) > before);
    }

    /// An expired chain is refused whatever was remembered, and a chain that
    /// expires within the span is not remembered at all; one the county CA
    /// did not issue is refused.
    #[test]
    fn an_expired_or_foreign_chain_is_refused_whatever_was_remembered() {
        let ca = ca();
        let cert = issue(&ca, (2026, 1, 1), (2027, 1, 1));
        let (v, calls) = verifier(&ca);
        v.verify_client_cert(&cert, &[], day(2026, 11, 26)).unwrap();
        assert!(v.verify_client_cert(&cert, &[], day(2027, 1, 2)).is_err(), "expired");
        // Valid now, expired an hour on: checked at every session.
        let expiring = day(2027, 1, 1).as_secs() - 12 * 3600 - 600;
        let expiring = UnixTime::since_unix_epoch(Duration::from_secs(expiring));
        v.verify_client_cert(&cert, &[], expiring).unwrap();
        let before = calls.calls.load(Ordering::SeqCst);
        v.verify_client_cert(&cert, &[], plus(expiring, 60)).unwrap();
        assert_eq!(calls.calls.load(Ordering::SeqCst), before + 2, "not remembered: it expires within the span");
        assert!(v.verify_client_cert(&cert, &[], plus(expiring, 601)).is_err(), "expired a second ago");
        let foreign = issue(&self::ca(), (2026, 1, 1), (2031, 1, 1));
        assert!(v.verify_client_cert(&foreign, &[], day(2026, 11, 26)).is_err());
    }

    /// Anyone holding a certificate can re-encode its ECDSA signature
    /// (s as n - s) into another certificate the county CA's verifier
    /// accepts, with another SHA-256: a revocation is looked for under every
    /// form (as revoked laptops were let in under the other one). For the
    /// county CA's curve (P-256) and the other one the verifier takes
    /// (P-384).
    #[test]
    fn a_certificate_reencoded_by_its_holder_is_revoked_with_it() {
        for alg in [&rcgen::PKCS_ECDSA_P256_SHA256, &rcgen::PKCS_ECDSA_P384_SHA384] {
            let ca = ca_of(KeyPair::generate_for(alg).unwrap());
            let cert = issue(&ca, (2026, 1, 1), (2031, 1, 1));
            let (v, _) = verifier(&ca);
            let accepted: Vec<CertificateDer<'_>> = crate::identity::other_signature_forms(&cert)
                .into_iter()
                .map(CertificateDer::from)
                .filter(|other| v.verify_client_cert(other, &[], day(2026, 11, 26)).is_ok())
                .collect();
            assert_eq!(accepted.len(), 1, "{alg:?}: the CA's verifier takes one other form");
            let other = &accepted[0];
            assert_ne!(other.as_ref(), cert.as_ref());
            let back = crate::identity::other_signature_forms(other);
            assert!(back.iter().any(|b| b.as_slice() == cert.as_ref()), "{alg:?}: and back");
            let revoked = proto::Hash::of(cert.as_ref());
            assert!(revocation_names(other).contains(&revoked), "{alg:?}: the other form names the revoked one");
            assert!(revocation_names(&cert).contains(&revoked));
        }
    }

    /// A chain with intermediates (the county CA issues none, but a
    /// certificate holder may send any) is verified every time: varying
    /// them cannot fill the memory. When the memory is full, the expired
    /// spans go first, then everything.
    #[test]
    fn only_a_certificate_the_ca_signed_directly_is_remembered_and_only_so_many() {
        let ca = ca();
        let cert = issue(&ca, (2026, 1, 1), (2031, 1, 1));
        let junk = issue(&ca, (2026, 1, 1), (2031, 1, 1));
        let (v, calls) = verifier(&ca);
        let t = day(2026, 11, 26);
        for _ in 0..3 {
            v.verify_client_cert(&cert, std::slice::from_ref(&junk), t).unwrap();
        }
        assert_eq!(calls.calls.load(Ordering::SeqCst), 3, "verified every time");
        assert!(v.verified.lock().unwrap().is_empty());

        let (v, calls) = verifier(&ca);
        let v = RememberingVerifier::remembering_at_most(v.inner, 2);
        let certs: Vec<_> = (0..3).map(|_| issue(&ca, (2026, 1, 1), (2031, 1, 1))).collect();
        v.verify_client_cert(&certs[0], &[], t).unwrap();
        let later = plus(t, REMEMBER_CHAIN_FOR.as_secs() + 10);
        v.verify_client_cert(&certs[1], &[], later).unwrap();
        v.verify_client_cert(&certs[2], &[], later).unwrap();
        let held: BTreeSet<_> = v.verified.lock().unwrap().keys().copied().collect();
        let hash = |c: &CertificateDer<'_>| proto::Hash::of(c.as_ref());
        assert_eq!(held, BTreeSet::from([hash(&certs[1]), hash(&certs[2])]), "the expired span went first");
        let more = issue(&ca, (2026, 1, 1), (2031, 1, 1));
        v.verify_client_cert(&more, &[], later).unwrap();
        assert_eq!(v.verified.lock().unwrap().len(), 1, "none expired: all went");
        let before = calls.calls.load(Ordering::SeqCst);
        v.verify_client_cert(&more, &[], plus(later, 1)).unwrap();
        assert_eq!(calls.calls.load(Ordering::SeqCst), before, "the newest is remembered");
    }
}
