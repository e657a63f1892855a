//! TLS 1.3 (rustls, ring provider) authenticated by a pinned Ed25519 key, with no CA and no
//! names: the server presents a self-signed certificate (rcgen) made from its key; the client
//! accepts exactly a certificate whose SubjectPublicKeyInfo is the pinned key, and rustls then
//! checks the handshake signature with that key. The server's key never leaves its
//! [`Identity`]: the certificate and every handshake signature are made through
//! [`Identity::sign`].

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{DigitallySignedStruct, SignatureAlgorithm, SignatureScheme};
use std::sync::{Arc, Mutex};
use tollway_core::{Identity, NodeId};

/// ALPN protocol name: a server answers nothing else.
pub const ALPN: &[u8] = b"tollway-speedtest/1";
/// The name the client puts in its (unsent: SNI is off) server name; never checked.
pub const SERVER_NAME: &str = "speedtest.tollway.invalid";
/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the 32-byte key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// rustls' ring provider (TLS 1.3 suites, X25519 key exchange). rustls 0.23.48 deprecates it
/// for lacking post-quantum key exchange; that protects the secrecy of recorded traffic against
/// a future quantum computer, and a speed test's traffic is filler: what matters here is
/// authentication, which no post-quantum key exchange changes. ring builds with the C compiler
/// alone (and is already in the tree through boringtun).
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The key in an Ed25519 SubjectPublicKeyInfo, or `None` for any other kind of key.
pub fn ed25519_key_of_spki(spki: &[u8]) -> Option<NodeId> {
    let key = spki.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    Some(NodeId(key.try_into().ok()?))
}

/// An [`Identity`] as a signer for rcgen (the certificate) and rustls (the handshake).
#[derive(Clone)]
struct IdentityKey {
    identity: Identity,
    public: [u8; 32],
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityKey({})", self.identity.node_id().short())
    }
}

impl rcgen::PublicKeyData for IdentityKey {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

impl rcgen::SigningKey for IdentityKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.identity.sign(msg).to_vec())
    }
}

impl SigningKey for IdentityKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered.contains(&SignatureScheme::ED25519).then(|| Box::new(self.clone()) as Box<dyn Signer>)
    }
    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ED25519
    }
}

impl Signer for IdentityKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        Ok(self.identity.sign(message).to_vec())
    }
    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesServerCert for OneCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Why a TLS configuration could not be built (does not happen with a sound build).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("making the self-signed certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("configuring TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server's certificate: self-signed by `identity`, its SubjectPublicKeyInfo the node key.
pub fn self_signed_certificate(identity: &Identity) -> Result<CertificateDer<'static>, rcgen::Error> {
    let key = IdentityKey { identity: identity.clone(), public: identity.node_id().0 };
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("tollway speedtest {}", identity.node_id()));
    // A positive serial number, fixed per key (the certificate is made anew at each start).
    let mut serial = identity.node_id().0[..16].to_vec();
    serial[0] = (serial[0] & 0x7f) | 0x40;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let cert = params.self_signed(&key)?;
    Ok(cert.der().clone())
}

/// The server side: TLS 1.3 only, no client certificates (the client proves its node key inside
/// the session), no session tickets, ALPN [`ALPN`] required.
pub fn server_config(identity: &Identity) -> Result<rustls::ServerConfig, TlsSetupError> {
    let cert = self_signed_certificate(identity)?;
    let key = IdentityKey { identity: identity.clone(), public: identity.node_id().0 };
    let certified = CertifiedKey::new(vec![cert], Arc::new(key));
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(OneCert(Arc::new(certified))));
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.send_tls13_tickets = 0;
    cfg.max_early_data_size = 0;
    Ok(cfg)
}

/// Accepts exactly the pinned key; remembers what the server presented, so that a mismatch can
/// be reported with both keys.
#[derive(Debug)]
pub struct PinnedKeyVerifier {
    pinned: NodeId,
    provider: Arc<CryptoProvider>,
    /// The key the server presented (set during the handshake).
    pub presented: Mutex<Option<Result<NodeId, String>>>,
}

impl PinnedKeyVerifier {
    pub fn new(pinned: NodeId) -> Arc<PinnedKeyVerifier> {
        Arc::new(PinnedKeyVerifier { pinned, provider: provider(), presented: Mutex::new(None) })
    }

    pub fn presented(&self) -> Option<Result<NodeId, String>> {
        self.presented.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, v: Result<NodeId, String>) {
        *self.presented.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }
}

impl ServerCertVerifier for PinnedKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity).inspect_err(|e| self.record(Err(e.to_string())))?;
        let spki = parsed.subject_public_key_info();
        let Some(key) = ed25519_key_of_spki(spki.as_ref()) else {
            self.record(Err("a certificate whose key is not Ed25519".into()));
            return Err(rustls::CertificateError::ApplicationVerificationFailure.into());
        };
        self.record(Ok(key));
        if key != self.pinned || !intermediates.is_empty() {
            return Err(rustls::CertificateError::ApplicationVerificationFailure.into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::PeerIncompatible::Tls12NotOffered.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// The client side for one test: TLS 1.3 only, the server authenticated by `verifier`, no
/// resumption, no SNI, ALPN [`ALPN`].
pub fn client_config(verifier: Arc<PinnedKeyVerifier>) -> Result<rustls::ClientConfig, TlsSetupError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.enable_sni = false;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_carries_the_node_key_and_is_deterministic() {
        let id = Identity::from_seed(&[5; 32]);
        let cert = self_signed_certificate(&id).unwrap();
        let parsed = ParsedCertificate::try_from(&cert).unwrap();
        assert_eq!(ed25519_key_of_spki(parsed.subject_public_key_info().as_ref()), Some(id.node_id()));
        // Deterministic (Ed25519 signatures are): the same key gives the same certificate.
        assert_eq!(self_signed_certificate(&id).unwrap(), cert);
    }

    #[test]
    fn the_verifier_accepts_only_the_pinned_key() {
        let id = Identity::from_seed(&[5; 32]);
        let other = Identity::from_seed(&[6; 32]);
        let cert = self_signed_certificate(&id).unwrap();
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        let v = PinnedKeyVerifier::new(id.node_id());
        assert!(v.verify_server_cert(&cert, &[], &name, &[], UnixTime::now()).is_ok());
        let v = PinnedKeyVerifier::new(other.node_id());
        assert!(v.verify_server_cert(&cert, &[], &name, &[], UnixTime::now()).is_err());
        assert_eq!(v.presented(), Some(Ok(id.node_id())));
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(v.verify_server_cert(&garbage, &[], &name, &[], UnixTime::now()).is_err());
        assert!(matches!(v.presented(), Some(Err(_))));
    }

    #[test]
    fn spki_parsing_is_strict() {
        let mut spki = ED25519_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(&[1; 32]);
        assert_eq!(ed25519_key_of_spki(&spki), Some(NodeId([1; 32])));
        assert_eq!(ed25519_key_of_spki(&spki[..43]), None);
        spki.push(0);
        assert_eq!(ed25519_key_of_spki(&spki), None);
        spki.pop();
        spki[8] = 0x71; // Ed448's OID
        assert_eq!(ed25519_key_of_spki(&spki), None);
    }
}
