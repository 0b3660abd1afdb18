//! Node identity and enrolment: the county CA, certificates for mutual TLS,
//! ed25519 signing keys and the enrolment bundle carried to a laptop.

use crate::protect::DataKeys;
use anyhow::{bail, Context, Result};
use ed25519_dalek::SigningKey;
use proto::{Catalogue, NodeId, NodeInfo, Tier, Topology};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde::{Deserialize, Serialize};

/// The bundle format tag; a file without it is not an enrolment bundle.
pub const BUNDLE_FORMAT: &str = "renshou-case-ledger-enrolment/2";

/// Everything a node needs to join the network: its identity plus the
/// county's topology and the catalogue. Written by `county-hub enroll`, read
/// by `<bin> init --enrollment`. It holds private keys: keep it like a
/// password and delete it after use.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Bundle {
    pub format: String,
    #[serde(flatten)]
    pub identity: Identity,
    pub secrets: Secrets,
    pub topology: Topology,
    pub catalogue: Catalogue,
    /// The county's global-lane events up to this node's enrolment, with
    /// the county's seal (hex of the wire encoding of a segment), so the
    /// node knows every key the county enrolled before it, its own among
    /// them, and passes them on at its first sync.
    #[serde(default)]
    pub global: Option<String>,
    /// The county's working-day calendar (absent from older bundles: the
    /// calendar shipped with the program is used).
    #[serde(default)]
    pub calendar: Option<proto::calendar::CalendarFile>,
}

/// A node's public identity, as kept in its store.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Identity {
    pub node: NodeInfo,
    pub tls_cert_pem: String,
    pub ca_cert_pem: String,
    /// Where the county hub listens (host:port).
    pub hub_address: String,
}

/// A node's private keys. In its store they exist only sealed under the
/// node's passphrase (see [`crate::keystore`]).
#[derive(Clone, Serialize, Deserialize)]
pub struct Secrets {
    /// Hex ed25519 secret key that signs this node's seals.
    pub signing_key: String,
    pub tls_key_pem: String,
    /// Keys of the personal data of the lanes in this node's scope.
    pub data_keys: DataKeys,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({:?})", self.data_keys)
    }
}

impl Identity {
    pub fn tier(&self) -> Tier {
        self.node.tier
    }
}

impl Secrets {
    pub fn signing_key(&self) -> Result<SigningKey> {
        let bytes: [u8; 32] = hex::decode(&self.signing_key)
            .ok()
            .and_then(|v| v.try_into().ok())
            .context("the stored signing key is damaged; re-enrol this node")?;
        Ok(SigningKey::from_bytes(&bytes))
    }
}

impl Bundle {
    /// Reads and checks a bundle file.
    pub fn read(path: &std::path::Path) -> Result<Bundle> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read enrolment bundle {}", path.display()))?;
        let bundle: Bundle = serde_json::from_str(&text).with_context(|| {
            format!("{} is not an enrolment bundle; ask the county for one (county-hub enroll)", path.display())
        })?;
        if bundle.format != BUNDLE_FORMAT {
            bail!("{} is a bundle of format {:?}; this program reads {BUNDLE_FORMAT}", path.display(), bundle.format);
        }
        bundle.validate().with_context(|| {
            format!("{} cannot enrol a node; ask the county for a new bundle (county-hub enroll)", path.display())
        })?;
        Ok(bundle)
    }

    /// The county's map as the bundle has it: its first topology and the
    /// changes the county published since (in its global lane).
    pub fn current_topology(&self) -> Result<Topology> {
        let mut topology = self.topology.clone();
        if let Some(hex_segment) = &self.global {
            let bytes = hex::decode(hex_segment).context("the bundle's county events are damaged")?;
            let segment = proto::sync::Segment::decode(&bytes).context("the bundle's county events are damaged")?;
            for e in &segment.events {
                if let proto::Body::Publish(p) = &e.body {
                    if let proto::publication::Publication::Topology(change) = &**p {
                        topology.apply(change).context("the bundle's topology changes do not apply")?;
                    }
                }
            }
        }
        Ok(topology)
    }

    /// Checks that the bundle can run its node, so that `init` never
    /// creates a store every later command would fail on: the node is in
    /// the topology with the same tier and parent and the public key of the
    /// signing key; the certificate and TLS key parse, belong together, are
    /// issued by the bundle's county CA and name the node; the catalogue
    /// holds together and is not empty. (The topology was checked when it
    /// was read.)
    pub fn validate(&self) -> Result<()> {
        let id = &self.identity;
        let node = &id.node;
        let topology = self.current_topology()?;
        let listed = topology
            .get(&node.id)
            .with_context(|| format!("its node {} is not in the topology it carries", node.id))?;
        if listed.tier != node.tier || listed.parent != node.parent {
            let under = |p: &Option<NodeId>| p.as_ref().map_or("nothing".to_string(), |p| p.to_string());
            bail!(
                "its node {} is a {} under {} in its topology, but the bundle says a {} under {}",
                node.id,
                listed.tier,
                under(&listed.parent),
                node.tier,
                under(&node.parent)
            );
        }
        if self.secrets.data_keys.for_lane(&node.id).is_none() {
            bail!("it holds no data key for {}'s own cases", node.id);
        }
        if id.hub_address.trim().is_empty() {
            bail!("it names no hub address");
        }
        check_certificate(id, &self.secrets)?;
        let public = proto::event::KeyId::of(&self.secrets.signing_key()?.verifying_key());
        let listed_key = listed.verifying_key.as_deref() == Some(public.to_hex().as_str());
        let certificate = certificate_fingerprint(&id.tls_cert_pem).context("its node certificate is not PEM")?;
        let enrolled = match &self.global {
            None => false,
            Some(hex_segment) => {
                let bytes = hex::decode(hex_segment).context("its county events are damaged")?;
                let segment = proto::sync::Segment::decode(&bytes).context("its county events are damaged")?;
                segment.events.iter().any(|e| {
                    matches!(&e.body, proto::Body::Enrol { node: n, key, certificate: c }
                        if n == &node.id && *key == public && *c == certificate)
                })
            }
        };
        if !listed_key && !enrolled {
            bail!(
                "its signing key and certificate are not the ones the county enrolled for {}; every peer would refuse its work",
                node.id
            );
        }

        self.catalogue.validate().context("its catalogue does not hold together")?;
        if self.catalogue.items.is_empty() {
            bail!("its catalogue holds no items");
        }
        Ok(())
    }
}

/// The node's certificate and key parse, belong together, chain to the
/// county CA and name the node.
fn check_certificate(id: &Identity, secrets: &Secrets) -> Result<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
    let certs = CertificateDer::pem_slice_iter(id.tls_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("its node certificate is not PEM")?;
    let cert = certs.first().context("its node certificate is missing or not PEM")?;
    let key = PrivateKeyDer::from_pem_slice(secrets.tls_key_pem.as_bytes())
        .context("its TLS key is not a PEM private key")?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(id.ca_cert_pem.as_bytes()) {
        roots
            .add(ca.context("its county CA certificate is not PEM")?)
            .context("its county CA certificate cannot be read")?;
    }
    if roots.is_empty() {
        bail!("it holds no county CA certificate");
    }
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(certs.clone(), key, &provider)
        .context("its TLS key cannot be read or does not belong to its certificate")?;
    let parsed = rustls::server::ParsedCertificate::try_from(cert).context("its node certificate cannot be read")?;
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_millis(crate::wall_clock_ms()));
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        &certs[1..],
        now,
        provider.signature_verification_algorithms.all,
    )
    .context("its node certificate is not issued by its county CA, or is not valid now")?;
    let want = certificate_name(&id.node.id, id.node.tier);
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| anyhow::anyhow!("unreadable certificate: {e:?}"))?;
    if !ee.valid_dns_names().any(|n| n == want) {
        bail!("its node certificate does not name {want}");
    }
    Ok(())
}

/// The DNS name a node's certificate carries: `<id>.<tier>.node`. Peers
/// learn the id and tier from it, never from a message.
pub fn certificate_name(id: &NodeId, tier: Tier) -> String {
    format!("{}.{}.node", id, tier)
}

/// Reads back an id and tier from a certificate name.
pub fn parse_certificate_name(name: &str) -> Option<(NodeId, Tier)> {
    let rest = name.strip_suffix(".node")?;
    let (id, tier) = rest.rsplit_once('.')?;
    Some((NodeId::new(id), Tier::parse(tier)?))
}

/// The county's certificate authority.
pub struct CertificateAuthority {
    pub cert_pem: String,
    pub key_pem: String,
}

fn ca_params(county: &NodeInfo) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, format!("{} case ledger CA", county.id));
    params.distinguished_name.push(DnType::OrganizationName, county.name.clone());
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

impl CertificateAuthority {
    pub fn generate(county: &NodeInfo) -> Result<CertificateAuthority> {
        let key = KeyPair::generate()?;
        let cert = ca_params(county)?.self_signed(&key)?;
        Ok(CertificateAuthority { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Issues a certificate and key for `node`, signed by this CA.
    pub fn issue(&self, county: &NodeInfo, node: &NodeInfo) -> Result<(String, String)> {
        let ca_key = KeyPair::from_pem(&self.key_pem).context("the CA key is damaged")?;
        // The issuer certificate is rebuilt from the same parameters and key;
        // only its subject and key matter for the issued certificate.
        let issuer = ca_params(county)?.self_signed(&ca_key)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![certificate_name(&node.id, node.tier)])?;
        params.distinguished_name.push(DnType::CommonName, node.id.to_string());
        params.distinguished_name.push(DnType::OrganizationalUnitName, node.tier.as_str());
        let cert = params.signed_by(&key, &issuer, &ca_key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The SHA-256 of a PEM certificate's DER bytes: how revocations name it.
pub fn certificate_fingerprint(pem: &str) -> Result<proto::Hash> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("unreadable certificate: {e:?}"))?;
    Ok(proto::Hash::of(der.as_ref()))
}

/// The other encodings of a certificate's ECDSA signature: an ECDSA
/// signature (r, s) holds as (r, n - s) too, and the verifier accepts both.
/// So anyone holding a certificate can re-encode it into another one that
/// the county CA's verifier accepts, with another SHA-256, without the
/// CA's key. A revocation names the certificate by its SHA-256, so a check
/// must look for every form (`sync::tls::revocation_names`). One form for
/// each curve the verifier takes ECDSA on (P-256, the county CA's, and
/// P-384) whose order `s` is below: only the CA's curve gives a valid one,
/// and a name too many costs nothing on a list of refusals. None for a
/// signature of another kind (Ed25519's and RSA's are not malleable so) or
/// a certificate not in strict DER.
pub fn other_signature_forms(der: &[u8]) -> Vec<Vec<u8>> {
    /// The orders of the P-256 and P-384 groups.
    const ORDERS: [&[u8]; 2] = [
        &[
            0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6,
            0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
        ],
        &[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf, 0x58, 0x1a, 0x0d, 0xb2,
            0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
        ],
    ];
    let Some(EcdsaSigned { tbs, alg, r, s }) = ecdsa_signed(der) else { return Vec::new() };
    let s = match s {
        [0, rest @ ..] => rest,
        _ => s,
    };
    ORDERS
        .iter()
        .filter_map(|n| {
            let other = order_minus(n, s)?;
            let first = other.iter().position(|b| *b != 0)?;
            let mut s2 = other[first..].to_vec();
            if s2[0] & 0x80 != 0 {
                s2.insert(0, 0);
            }
            let pair = [r, &der_wrap(0x02, &s2)].concat();
            let sig = [&[0u8][..], &der_wrap(0x30, &pair)].concat();
            let body = [tbs, alg, &der_wrap(0x03, &sig)].concat();
            (body.len() <= 0xffff).then(|| der_wrap(0x30, &body))
        })
        .collect()
}

/// A certificate's parts that its other signature forms keep or change.
struct EcdsaSigned<'a> {
    /// The signed part and the signature's algorithm, as encoded.
    tbs: &'a [u8],
    alg: &'a [u8],
    /// The signature's r as encoded, and s's contents.
    r: &'a [u8],
    s: &'a [u8],
}

/// The parts of a certificate signed with ECDSA (SHA-256 or SHA-384), in
/// strict DER.
fn ecdsa_signed(der: &[u8]) -> Option<EcdsaSigned<'_>> {
    /// ecdsa-with-SHA256 and -SHA384 start so (the OID's last byte differs).
    const ECDSA_WITH: [u8; 11] = [0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    let (0x30, cert, []) = der_item(der)? else { return None };
    let (0x30, _, after_tbs) = der_item(cert)? else { return None };
    let tbs = &cert[..cert.len() - after_tbs.len()];
    let (0x30, _, after_alg) = der_item(after_tbs)? else { return None };
    let alg = &after_tbs[..after_tbs.len() - after_alg.len()];
    let (0x03, [0, sig @ ..], []) = der_item(after_alg)? else { return None };
    if !(alg.len() == 12 && alg.starts_with(&ECDSA_WITH) && matches!(alg[11], 2 | 3)) {
        return None;
    }
    let (0x30, pair, []) = der_item(sig)? else { return None };
    let (0x02, _, after_r) = der_item(pair)? else { return None };
    let r = &pair[..pair.len() - after_r.len()];
    let (0x02, s, []) = der_item(after_r)? else { return None };
    Some(EcdsaSigned { tbs, alg, r, s })
}

/// `n - s` (big-endian, `n`'s width) for `0 < s < n`.
fn order_minus(n: &[u8], s: &[u8]) -> Option<Vec<u8>> {
    if s.len() > n.len() || s.iter().all(|b| *b == 0) {
        return None;
    }
    let mut padded = vec![0u8; n.len()];
    padded[n.len() - s.len()..].copy_from_slice(s);
    if padded.as_slice() >= n {
        return None;
    }
    let mut out = vec![0u8; n.len()];
    let mut borrow = 0i16;
    for i in (0..n.len()).rev() {
        let d = i16::from(n[i]) - i16::from(padded[i]) - borrow;
        borrow = i16::from(d < 0);
        out[i] = (d + 256 * borrow) as u8;
    }
    Some(out)
}

/// One DER item of `input`: its tag, its contents and what follows it
/// (definite, minimal lengths only).
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        0..=0x7f => (usize::from(first), rest),
        0x81 => {
            let (&b, rest) = rest.split_first()?;
            (b >= 0x80).then_some((usize::from(b), rest))?
        }
        0x82 => {
            let [a, b, rest @ ..] = rest else { return None };
            let len = usize::from(*a) << 8 | usize::from(*b);
            (len >= 0x100).then_some((len, rest))?
        }
        _ => return None,
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// A DER item of `tag` holding `contents`.
fn der_wrap(tag: u8, contents: &[u8]) -> Vec<u8> {
    let len = contents.len();
    let mut out = vec![tag];
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend([0x81, len as u8]),
        _ => out.extend([0x82, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(contents);
    out
}

/// A fresh ed25519 signing key, hex encoded, with its public key.
pub fn generate_signing_key() -> (String, String) {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    (hex::encode(key.to_bytes()), hex::encode(key.verifying_key().to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_round_trip() {
        let id = NodeId::new("511421101001");
        let name = certificate_name(&id, Tier::Village);
        assert_eq!(parse_certificate_name(&name), Some((id, Tier::Village)));
        assert_eq!(parse_certificate_name("evil.example.com"), None);
    }
}
