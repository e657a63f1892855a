//! [`Links`](crate::Links) implementations: rtnetlink, and an in-memory fake (in
//! [`crate::fake`]).

mod netlink;

pub(crate) use netlink::names_with_prefix;
pub use netlink::NetlinkLinks;
