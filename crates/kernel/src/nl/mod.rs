//! A small synchronous netlink client: one socket per request batch, opened in the calling
//! thread's network namespace, so every operation acts where the caller is. Shared by the
//! kernel-facing crates (the traffic crate reads tc state through it).

pub(crate) mod genl;
pub(crate) mod route;
pub(crate) mod table;

pub use route::{all_links, delete_link, link_by_name, set_link_up, LinkSummary};

use netlink_packet_core::{
    NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_sys::{Socket, SocketAddr};
use std::fmt::Debug;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// How long to wait for the kernel's answer before giving up. The kernel answers netlink
/// requests synchronously, so this only guards against a wedged kernel or a lost reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct NlSocket {
    sock: Socket,
    seq: u32,
}

impl NlSocket {
    /// An rtnetlink socket in the calling thread's network namespace.
    pub fn route() -> io::Result<NlSocket> {
        NlSocket::open(netlink_sys::protocols::NETLINK_ROUTE)
    }

    /// A generic-netlink socket in the calling thread's network namespace.
    pub fn generic() -> io::Result<NlSocket> {
        NlSocket::open(netlink_sys::protocols::NETLINK_GENERIC)
    }

    fn open(protocol: isize) -> io::Result<NlSocket> {
        let mut sock = Socket::new(protocol)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        set_recv_timeout(&sock, REPLY_TIMEOUT)?;
        Ok(NlSocket { sock, seq: 0 })
    }

    /// Send one request with `NLM_F_ACK` and collect the replies until the acknowledgement.
    /// `extra_flags` adds e.g. `NLM_F_CREATE | NLM_F_EXCL`.
    pub fn request<T>(&mut self, payload: T, extra_flags: u16) -> io::Result<Vec<T>>
    where
        T: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        self.exchange(payload, NLM_F_REQUEST | NLM_F_ACK | extra_flags)
    }

    /// Send one dump request and collect every reply until `NLMSG_DONE`.
    pub fn dump<T>(&mut self, payload: T) -> io::Result<Vec<T>>
    where
        T: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        self.exchange(payload, NLM_F_REQUEST | NLM_F_DUMP)
    }

    fn exchange<T>(&mut self, payload: T, flags: u16) -> io::Result<Vec<T>>
    where
        T: NetlinkSerializable + NetlinkDeserializable + Debug,
    {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = encode(payload, flags, seq);
        self.sock.send(&bytes, 0)?;

        let mut replies = Vec::new();
        loop {
            let (buf, _) = self.sock.recv_from_full()?;
            let mut offset = 0;
            while offset < buf.len() {
                let msg = NetlinkMessage::<T>::deserialize(&buf[offset..]).map_err(invalid_data)?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(invalid_data("netlink message of length 0"));
                }
                offset += align4(len);
                if msg.header.sequence_number != seq {
                    // A reply to an earlier request that timed out: not ours.
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(_) => Err(e.to_io()),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Overrun(_) => return Err(invalid_data("netlink overrun")),
                    _ => {}
                }
            }
        }
    }
}

/// Serialize one request. Exposed to the crate so unit tests can check the bytes.
pub(crate) fn encode<T: NetlinkSerializable>(payload: T, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
    msg.finalize();
    let mut bytes = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut bytes);
    bytes
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn set_recv_timeout(sock: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval { tv_sec: timeout.as_secs() as _, tv_usec: timeout.subsec_micros() as _ };
    // SAFETY: `tv` is a valid timeval and the length matches it.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn invalid_data(e: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// True if the error is the errno `code`.
pub fn is_errno(e: &io::Error, code: i32) -> bool {
    e.raw_os_error() == Some(code)
}
