//! A small synchronous rtnetlink client, opened in the calling thread's network namespace.
//!
//! Used to read links and tc state (qdiscs, classes, filters): `tc -j class show` prints plain
//! text for HTB classes in iproute2 6.1, so JSON is not an option there, and one netlink dump
//! costs far less than a process.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr};
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct NlSocket {
    sock: Socket,
    seq: u32,
}

impl NlSocket {
    pub(crate) fn route() -> io::Result<NlSocket> {
        let mut sock = Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        set_recv_timeout(&sock, REPLY_TIMEOUT)?;
        Ok(NlSocket { sock, seq: 0 })
    }

    /// One request with `NLM_F_ACK` (plus `extra_flags`); the replies before the ack.
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        extra_flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_ACK | extra_flags)
    }

    /// One dump request; every reply until `NLMSG_DONE`.
    pub(crate) fn dump(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.exchange(msg, NLM_F_REQUEST | NLM_F_DUMP)
    }

    fn exchange(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.sock.send(&encode(msg, flags, seq), 0)?;
        let mut replies = Vec::new();
        loop {
            let (buf, _) = self.sock.recv_from_full()?;
            let mut offset = 0;
            while offset < buf.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..]).map_err(invalid_data)?;
                let len = msg.header.length as usize;
                if len == 0 {
                    return Err(invalid_data("netlink message of length 0"));
                }
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(_) => Err(e.to_io()),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::Overrun(_) => return Err(invalid_data("netlink overrun")),
                    _ => {}
                }
            }
        }
    }
}

fn encode<T: NetlinkSerializable>(payload: T, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
    msg.finalize();
    let mut bytes = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut bytes);
    bytes
}

fn set_recv_timeout(sock: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval { tv_sec: timeout.as_secs() as _, tv_usec: timeout.subsec_micros() as _ };
    // SAFETY: `tv` is a valid timeval and the length passed matches it.
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

pub(crate) fn invalid_data(e: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

pub(crate) fn is_errno(e: &io::Error, code: i32) -> bool {
    e.raw_os_error() == Some(code)
}
