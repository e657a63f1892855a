//! Network I/O tasks (tokio): discovery datagrams on physical interfaces and control sessions
//! inside tunnels. They parse what arrives into typed inputs for the driver and write what the
//! driver asks; they hold no protocol state.

pub mod control;
pub mod discovery;

use std::ffi::CString;
use tollway_core::IfName;

/// The index of a network interface in the current namespace, if it exists.
pub fn if_index(name: &IfName) -> Option<u32> {
    let c = CString::new(name.as_str()).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// The name of the interface with index `idx`, if any.
pub fn if_name(idx: u32) -> Option<IfName> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(idx, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    IfName::new(s.to_str().ok()?).ok()
}
