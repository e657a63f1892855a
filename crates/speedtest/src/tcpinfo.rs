//! The kernel's view of a TCP connection (Linux `TCP_INFO`): RTT and retransmissions.

use std::os::fd::AsRawFd;

/// The fields of `struct tcp_info` a test uses (see linux/tcp.h for the layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpInfo {
    /// Smoothed RTT, µs.
    pub rtt_us: u32,
    /// Lowest RTT seen, µs (0 if the kernel does not report it).
    pub min_rtt_us: u32,
    /// Segments retransmitted over the connection's life.
    pub total_retrans: u32,
    /// Data segments sent over the connection's life, retransmissions included.
    pub data_segs_out: u32,
}

const OFF_RTT: usize = 68;
const OFF_TOTAL_RETRANS: usize = 100;
const OFF_MIN_RTT: usize = 148;
const OFF_DATA_SEGS_OUT: usize = 156;

fn u32_at(buf: &[u8], len: usize, off: usize) -> Option<u32> {
    (off + 4 <= len).then(|| u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap_or_default()))
}

impl TcpInfo {
    /// Read it from a connected TCP socket. Fails if the kernel is too old to report
    /// `tcpi_data_segs_out` (Linux 4.6).
    pub fn of(sock: &impl AsRawFd) -> std::io::Result<TcpInfo> {
        let mut buf = [0u8; 256];
        let mut len = buf.len() as libc::socklen_t;
        // SAFETY: a valid socket fd, a buffer of `len` bytes; the kernel writes at most `len`.
        let rc = unsafe {
            libc::getsockopt(sock.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, buf.as_mut_ptr().cast(), &mut len)
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let len = (len as usize).min(buf.len());
        let too_old = || std::io::Error::other(format!("TCP_INFO of {len} bytes lacks tcpi_data_segs_out"));
        Ok(TcpInfo {
            rtt_us: u32_at(&buf, len, OFF_RTT).ok_or_else(too_old)?,
            total_retrans: u32_at(&buf, len, OFF_TOTAL_RETRANS).ok_or_else(too_old)?,
            min_rtt_us: u32_at(&buf, len, OFF_MIN_RTT).unwrap_or(0),
            data_segs_out: u32_at(&buf, len, OFF_DATA_SEGS_OUT).ok_or_else(too_old)?,
        })
    }

    /// Retransmitted and sent data segments between `earlier` and `self` (wrapping counters).
    pub fn since(&self, earlier: &TcpInfo) -> (u32, u32) {
        let sent = self.data_segs_out.wrapping_sub(earlier.data_segs_out);
        let retrans = self.total_retrans.wrapping_sub(earlier.total_retrans).min(sent);
        (retrans, sent)
    }
}

/// Retransmissions per sent segment, in parts per million (0 when nothing was sent).
pub fn loss_ppm(retrans: u32, sent: u32) -> u32 {
    if sent == 0 {
        0
    } else {
        ((retrans.min(sent) as u64 * 1_000_000) / sent as u64) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn reads_counters_of_a_real_loopback_connection() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let before = TcpInfo::of(&c).unwrap();
        c.write_all(&[0u8; 100_000]).unwrap();
        let mut got = vec![0u8; 100_000];
        s.read_exact(&mut got).unwrap();
        let after = TcpInfo::of(&c).unwrap();
        let (retrans, sent) = after.since(&before);
        assert!(sent >= 2, "{before:?} → {after:?}");
        assert_eq!(retrans, 0);
        assert!(after.rtt_us > 0 && after.rtt_us < 1_000_000, "{after:?}");
    }

    #[test]
    fn loss_is_a_bounded_fraction() {
        assert_eq!(loss_ppm(0, 0), 0);
        assert_eq!(loss_ppm(1, 1000), 1000);
        assert_eq!(loss_ppm(5, 3), 1_000_000);
        assert_eq!(loss_ppm(u32::MAX, u32::MAX), 1_000_000);
    }
}
