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
        bundle.secrets.signing_key()?;
        Ok(bundle)
    }
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
