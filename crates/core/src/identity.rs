//! A node's keys. One secret seed (kept by the daemon in its data directory) gives both the
//! Ed25519 node key, whose public half is the node id, and the WireGuard key.

use crate::ids::{NodeId, WgPublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The node's signing identity plus its WireGuard key pair.
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
    wg_private: [u8; 32],
    wg_public: WgPublicKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("node_id", &self.node_id()).finish_non_exhaustive()
    }
}

fn derive(tag: &[u8], seed: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(tag);
    h.update(seed);
    h.finalize().into()
}

impl Identity {
    /// Derive both keys from a 32-byte secret seed (domain-separated hashes).
    pub fn from_seed(seed: &[u8; 32]) -> Identity {
        let signing = SigningKey::from_bytes(&derive(b"tollway node key v1", seed));
        let wg_secret = x25519_dalek::StaticSecret::from(derive(b"tollway wireguard key v1", seed));
        let wg_public = WgPublicKey(x25519_dalek::PublicKey::from(&wg_secret).to_bytes());
        Identity { signing, wg_private: wg_secret.to_bytes(), wg_public }
    }

    pub fn node_id(&self) -> NodeId {
        NodeId(self.signing.verifying_key().to_bytes())
    }

    pub fn wg_public(&self) -> WgPublicKey {
        self.wg_public
    }

    /// The (clamped) WireGuard private key, for configuring tunnels.
    pub fn wg_private(&self) -> [u8; 32] {
        self.wg_private
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }
}

/// Why a signature did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the public key is not a valid Ed25519 point")]
    BadKey,
    #[error("the signature does not match")]
    Mismatch,
}

/// Verify an Ed25519 signature made by `signer` over `msg` (strict verification: rejects
/// malleable and small-order forms).
pub fn verify(signer: &NodeId, msg: &[u8], sig: &[u8; 64]) -> Result<(), SignatureError> {
    let key = VerifyingKey::from_bytes(&signer.0).map_err(|_| SignatureError::BadKey)?;
    key.verify_strict(msg, &Signature::from_bytes(sig)).map_err(|_| SignatureError::Mismatch)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_deterministic_and_distinct_per_seed() {
        let a = Identity::from_seed(&[1; 32]);
        let a2 = Identity::from_seed(&[1; 32]);
        let b = Identity::from_seed(&[2; 32]);
        assert_eq!(a.node_id(), a2.node_id());
        assert_eq!(a.wg_public(), a2.wg_public());
        assert_ne!(a.node_id(), b.node_id());
        assert_ne!(a.wg_public(), b.wg_public());
        assert_ne!(a.node_id().0, a.wg_public().0);
    }

    #[test]
    fn signatures_verify_only_for_the_signer_and_message() {
        let a = Identity::from_seed(&[1; 32]);
        let b = Identity::from_seed(&[2; 32]);
        let sig = a.sign(b"hello");
        assert_eq!(verify(&a.node_id(), b"hello", &sig), Ok(()));
        assert_eq!(verify(&a.node_id(), b"hellO", &sig), Err(SignatureError::Mismatch));
        assert_eq!(verify(&b.node_id(), b"hello", &sig), Err(SignatureError::Mismatch));
    }
}
