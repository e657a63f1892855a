//! The destinations speed tests rank neighbors for (issue 9): the pinned servers, grouped by
//! the routes that reach them. Destination 0 is the internet: every pinned server outside the
//! mesh, reached by the default routes (both families leave by the same uplinks). Each server
//! inside the mesh (another node serving tests, at its fc00::/7 address) is a destination of
//! its own, reached by its /128, numbered from 1 in the order of the config. A neighbor tested
//! against a destination is ranked for it on those tests (`tollway_core::Penalty`).

use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use tollway_core::NodeId;

/// Pinned servers inside the mesh that are destinations of their own, at most. Each costs
/// babeld one input filter per neighbor slot and penalty level.
pub const MAX_MESH_DESTINATIONS: usize = 8;

/// The destination of the internet's servers.
pub const INTERNET: u8 = 0;

/// One pinned server, and the destination it measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    pub server: SocketAddr,
    pub key: NodeId,
    pub destination: u8,
}

/// One tested destination: its number, how it is shown, and the routes that lead to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub number: u8,
    /// `internet`, or the server's mesh address.
    pub label: String,
    pub prefixes: Vec<IpNet>,
}

/// Whether a server's address is inside the mesh (fc00::/7).
fn in_mesh(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xfe00) == 0xfc00)
}

/// The pins with their destinations, and the destinations (in order of number); or why not: more than [`MAX_MESH_DESTINATIONS`] servers inside the mesh.
pub fn destinations(pins: &[(SocketAddr, NodeId)]) -> Result<(Vec<Pin>, Vec<Destination>), String> {
    let mut out: Vec<Destination> = Vec::new();
    let mut tagged = Vec::new();
    for (server, key) in pins {
        let (label, prefixes) = if in_mesh(server.ip()) {
            (server.ip().to_string(), vec![IpNet::new(server.ip(), 128).expect("valid")])
        } else {
            ("internet".to_owned(), vec!["::/0".parse().expect("valid"), "0.0.0.0/0".parse().expect("valid")])
        };
        let number = match out.iter().find(|d| d.label == label) {
            Some(d) => d.number,
            None if label == "internet" => INTERNET,
            None => {
                let mesh = out.iter().filter(|d| d.number != INTERNET).count();
                if mesh >= MAX_MESH_DESTINATIONS {
                    return Err(format!(
                        "more than {MAX_MESH_DESTINATIONS} servers inside the mesh ({}: each is a destination of its own, ranked apart)",
                        server.ip()
                    ));
                }
                (mesh + 1) as u8
            }
        };
        if !out.iter().any(|d| d.number == number) {
            out.push(Destination { number, label, prefixes });
        }
        tagged.push(Pin { server: *server, key: *key, destination: number });
    }
    out.sort_by_key(|d| d.number);
    Ok((tagged, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internet_servers_share_destination_0_and_each_mesh_server_has_its_own() {
        let k = NodeId([7; 32]);
        let pins = [
            ("[fd00::2]:7479".parse().unwrap(), k),
            ("[2001:db8::1]:7479".parse().unwrap(), k),
            ("192.0.2.1:7479".parse().unwrap(), k),
            ("[fd00::3]:7479".parse().unwrap(), k),
            ("[fd00::2]:7480".parse().unwrap(), k),
        ];
        let (tagged, dests) = destinations(&pins).unwrap();
        assert_eq!(tagged.iter().map(|p| p.destination).collect::<Vec<_>>(), [1, 0, 0, 2, 1]);
        let labels: Vec<(u8, &str, usize)> =
            dests.iter().map(|d| (d.number, d.label.as_str(), d.prefixes.len())).collect();
        assert_eq!(labels, [(0, "internet", 2), (1, "fd00::2", 1), (2, "fd00::3", 1)]);
        assert_eq!(dests[1].prefixes[0].to_string(), "fd00::2/128");
        // No internet server: no destination 0 (no filters on the default routes).
        let (_, only_mesh) = destinations(&pins[..1]).unwrap();
        assert_eq!(only_mesh.iter().map(|d| d.number).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn too_many_mesh_servers_are_refused_with_the_reason() {
        let k = NodeId([7; 32]);
        let pins: Vec<(SocketAddr, NodeId)> =
            (1..=MAX_MESH_DESTINATIONS as u16 + 1).map(|i| (format!("[fd00::{i}]:7479").parse().unwrap(), k)).collect();
        assert!(destinations(&pins[..MAX_MESH_DESTINATIONS]).is_ok());
        let e = destinations(&pins).unwrap_err();
        assert!(e.contains("more than 8 servers inside the mesh"), "{e}");
    }
}
