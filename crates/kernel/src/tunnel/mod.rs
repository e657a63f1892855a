//! [`Tunnels`] implementations: kernel WireGuard (netlink), userspace WireGuard (boringtun,
//! in-process), and the choice between them.

mod kernel;
pub mod uapi;
mod userspace;

pub use kernel::{probe_kernel_wireguard, KernelTunnels};
pub use userspace::{UserspaceOptions, UserspaceTunnels};

use crate::nl::route;
use crate::nl::NlSocket;
use crate::{TunnelError, Tunnels};
use std::fmt;
use std::io;
use std::str::FromStr;
use tollway_core::IfName;

/// Which WireGuard implementation to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TunnelBackend {
    /// Kernel WireGuard if this kernel has it, else userspace.
    #[default]
    Auto,
    Kernel,
    Userspace,
}

impl TunnelBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelBackend::Auto => "auto",
            TunnelBackend::Kernel => "kernel",
            TunnelBackend::Userspace => "userspace",
        }
    }
}

impl fmt::Display for TunnelBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown tunnel backend {0:?} (expected auto, kernel or userspace)")]
pub struct ParseBackendError(String);

impl FromStr for TunnelBackend {
    type Err = ParseBackendError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(TunnelBackend::Auto),
            "kernel" => Ok(TunnelBackend::Kernel),
            "userspace" => Ok(TunnelBackend::Userspace),
            _ => Err(ParseBackendError(s.to_string())),
        }
    }
}

/// The tunnels of `backend`, for the calling thread's network namespace. `Auto` probes for
/// kernel WireGuard (creating and deleting a throw-away device); `Kernel` fails with
/// [`TunnelError::Unavailable`] if the probe fails.
pub fn open_tunnels(backend: TunnelBackend, userspace: UserspaceOptions) -> Result<Box<dyn Tunnels>, TunnelError> {
    let chosen = match backend {
        TunnelBackend::Userspace => TunnelBackend::Userspace,
        TunnelBackend::Kernel if probe_kernel_wireguard() => TunnelBackend::Kernel,
        TunnelBackend::Kernel => {
            return Err(TunnelError::Unavailable {
                backend: "kernel",
                detail: "this kernel cannot create WireGuard devices".into(),
            })
        }
        TunnelBackend::Auto if probe_kernel_wireguard() => TunnelBackend::Kernel,
        TunnelBackend::Auto => TunnelBackend::Userspace,
    };
    tracing::info!(requested = %backend, chosen = %chosen, "tunnel backend");
    Ok(match chosen {
        TunnelBackend::Kernel => Box::new(KernelTunnels::new()),
        _ => Box::new(UserspaceTunnels::new(userspace)),
    })
}

/// Tunnel devices (TUN or kernel WireGuard) whose name starts with `prefix`, sorted.
pub(crate) fn list_tunnels(prefix: &str) -> Result<Vec<IfName>, TunnelError> {
    let mut sock = NlSocket::route().map_err(TunnelError::List)?;
    let links = route::all_links(&mut sock).map_err(TunnelError::List)?;
    Ok(crate::link::names_with_prefix(links.iter().filter(|l| l.is_tunnel()).map(|l| l.name.as_str()), prefix))
}

/// Delete a tunnel device named `name` if there is one. An interface of another kind under
/// that name is an error: it is not ours to delete.
pub(crate) fn delete_leftover(name: &IfName) -> io::Result<()> {
    let mut sock = NlSocket::route()?;
    let Some(link) = route::link_by_name(&mut sock, name.as_str())? else {
        return Ok(());
    };
    if !link.is_tunnel() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("an interface of kind {} has this name", link.kind.as_deref().unwrap_or("(none)")),
        ));
    }
    tracing::info!(ifname = %name, kind = ?link.kind, "deleting tunnel interface through netlink");
    route::delete_link(&mut sock, link.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip() {
        for b in [TunnelBackend::Auto, TunnelBackend::Kernel, TunnelBackend::Userspace] {
            assert_eq!(b.as_str().parse::<TunnelBackend>(), Ok(b));
            assert_eq!(b.to_string(), b.as_str());
        }
        for bad in ["", "Kernel", "wireguard-go", "auto "] {
            assert!(bad.parse::<TunnelBackend>().is_err(), "{bad:?}");
        }
    }
}
