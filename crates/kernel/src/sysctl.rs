//! Forwarding switches under `/proc/sys/net`, which the kernel resolves in the network
//! namespace of the thread that opens the file: these act where the caller is.
//!
//! A node that routes for others needs `net.ipv4.ip_forward` and
//! `net.ipv6.conf.all.forwarding`. Note that IPv6 forwarding also makes the kernel ignore router
//! advertisements on interfaces whose `accept_ra` is 1 (an uplink configured by SLAAC needs
//! `accept_ra = 2`).

use std::io;

const IPV4_FORWARDING: &str = "/proc/sys/net/ipv4/ip_forward";
const IPV6_FORWARDING: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct SysctlError {
    pub path: String,
    pub source: io::Error,
}

/// Whether packets are forwarded, per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarding {
    pub ipv4: bool,
    pub ipv6: bool,
}

fn read_flag(path: &str) -> Result<bool, SysctlError> {
    let err = |source| SysctlError { path: path.to_string(), source };
    let v = std::fs::read_to_string(path).map_err(err)?;
    match v.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(err(io::Error::new(io::ErrorKind::InvalidData, format!("unexpected value {other:?}")))),
    }
}

fn write_flag(path: &str, on: bool) -> Result<(), SysctlError> {
    if read_flag(path)? == on {
        return Ok(());
    }
    std::fs::write(path, if on { "1" } else { "0" }).map_err(|source| SysctlError { path: path.to_string(), source })
}

/// The current forwarding switches.
pub fn forwarding() -> Result<Forwarding, SysctlError> {
    Ok(Forwarding { ipv4: read_flag(IPV4_FORWARDING)?, ipv6: read_flag(IPV6_FORWARDING)? })
}

/// Set both switches (writing only those that differ).
pub fn set_forwarding(want: Forwarding) -> Result<(), SysctlError> {
    write_flag(IPV4_FORWARDING, want.ipv4)?;
    write_flag(IPV6_FORWARDING, want.ipv6)
}
