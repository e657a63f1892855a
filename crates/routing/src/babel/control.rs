//! A client of babeld's local control socket (`local-path-readwrite`).
//!
//! The protocol: on connect babeld prints a banner (`BABEL 1.0`, `version …`, `host …`,
//! `my-id …`) ending in `ok`. Then one request per line; each reply is zero or more data lines
//! followed by exactly one of `ok`, `no[ message]` or `bad`. We send one request at a time and
//! read its whole reply before the next.
//!
//! Nothing babeld prints is trusted to be well formed: lines are bounded
//! ([`MAX_LINE`]), replies are bounded ([`MAX_REPLY_LINES`]), every read has a deadline, bytes
//! that are not UTF-8 are replaced, and any violation is an error that closes the connection
//! (the next request reconnects), never a panic.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The longest line we accept from babeld (its own lines are below 512 bytes).
pub const MAX_LINE: usize = 4096;
/// The most lines one reply may have (a `dump` of a large mesh: a few lines per neighbor and
/// per route).
pub const MAX_REPLY_LINES: usize = 200_000;
/// babeld's buffer for one request line (`LOCAL_BUFSIZE`): longer ones are never answered.
pub const MAX_REQUEST: usize = 1023;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("connecting: {0}")]
    Connect(io::Error),
    #[error("{0}")]
    Io(io::Error),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("babeld closed the connection")]
    Closed,
    #[error("a line longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("a reply longer than {MAX_REPLY_LINES} lines")]
    ReplyTooLong,
    #[error("not a babeld control socket (banner starts with {0:?})")]
    NotBabel(String),
    #[error("request {0:?} cannot be sent (one line, at most {MAX_REQUEST} bytes)")]
    BadRequest(String),
    #[error("babeld refused {request:?}: no{}", .message.as_deref().map(|m| format!(" {m}")).unwrap_or_default())]
    Refused { request: String, message: Option<String> },
    #[error("babeld could not parse {0:?} (bad)")]
    Bad(String),
}

/// What babeld said about itself when we connected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Banner {
    pub protocol: String,
    pub version: Option<String>,
    pub host: Option<String>,
    pub my_id: Option<String>,
}

/// One connection to babeld's control socket.
pub struct ControlClient {
    stream: UnixStream,
    buf: Vec<u8>,
    timeout: Duration,
    banner: Banner,
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient").field("banner", &self.banner).finish()
    }
}

impl ControlClient {
    /// Connect and read the banner; `timeout` bounds each request's whole reply.
    pub fn connect(path: &Path, timeout: Duration) -> Result<ControlClient, ControlError> {
        let stream = UnixStream::connect(path).map_err(ControlError::Connect)?;
        stream.set_write_timeout(Some(timeout)).map_err(ControlError::Io)?;
        let mut c = ControlClient { stream, buf: Vec::new(), timeout, banner: Banner::default() };
        let lines = c.read_reply("(banner)")?;
        c.banner = parse_banner(&lines)?;
        Ok(c)
    }

    pub fn banner(&self) -> &Banner {
        &self.banner
    }

    /// Send one request and return its data lines (`ok`), or why not.
    pub fn request(&mut self, line: &str) -> Result<Vec<String>, ControlError> {
        if line.contains('\n') || line.len() > MAX_REQUEST {
            return Err(ControlError::BadRequest(truncate(line)));
        }
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        self.stream.write_all(&bytes).map_err(|e| timeout_or_io(e, self.timeout))?;
        self.read_reply(line)
    }

    /// Read lines up to the terminator. A `no`/`bad` is an error carrying the request.
    fn read_reply(&mut self, request: &str) -> Result<Vec<String>, ControlError> {
        let deadline = Instant::now() + self.timeout;
        let mut lines = Vec::new();
        loop {
            let line = self.read_line(deadline)?;
            match line.as_str() {
                "ok" => return Ok(lines),
                "bad" => return Err(ControlError::Bad(truncate(request))),
                "no" => return Err(ControlError::Refused { request: truncate(request), message: None }),
                l if l.starts_with("no ") => {
                    return Err(ControlError::Refused { request: truncate(request), message: Some(l[3..].to_string()) })
                }
                _ => {}
            }
            if lines.len() >= MAX_REPLY_LINES {
                return Err(ControlError::ReplyTooLong);
            }
            lines.push(line);
        }
    }

    /// One line without its newline, read before `deadline`.
    fn read_line(&mut self, deadline: Instant) -> Result<String, ControlError> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                if i > MAX_LINE {
                    return Err(ControlError::LineTooLong);
                }
                let rest = self.buf.split_off(i + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if self.buf.len() > MAX_LINE {
                return Err(ControlError::LineTooLong);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ControlError::Timeout(self.timeout));
            }
            self.stream.set_read_timeout(Some(left)).map_err(ControlError::Io)?;
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ControlError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(timeout_or_io(e, self.timeout)),
            }
        }
    }
}

fn timeout_or_io(e: io::Error, timeout: Duration) -> ControlError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ControlError::Timeout(timeout),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => ControlError::Closed,
        _ => ControlError::Io(e),
    }
}

/// At most 200 bytes of a request, for error messages.
fn truncate(s: &str) -> String {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn parse_banner(lines: &[String]) -> Result<Banner, ControlError> {
    let first = lines.first().map(String::as_str).unwrap_or("");
    let Some(protocol) = first.strip_prefix("BABEL ") else {
        return Err(ControlError::NotBabel(truncate(first)));
    };
    let mut b = Banner { protocol: protocol.to_string(), ..Banner::default() };
    for line in &lines[1..] {
        match line.split_once(' ') {
            Some(("version", v)) => b.version = Some(v.to_string()),
            Some(("host", v)) => b.host = Some(v.to_string()),
            Some(("my-id", v)) => b.my_id = Some(v.to_string()),
            _ => {}
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::thread;

    const BANNER: &str = "BABEL 1.0\nversion babeld-1.12.1\nhost n1\nmy-id 02:00:00:00:00:00:00:01\nok\n";

    /// A scripted babeld: answers each request line from the list, in order (one entry per
    /// request, written as is), then closes.
    fn fake_babeld(
        banner: &'static str,
        answers: Vec<Vec<u8>>,
    ) -> (tempfile::TempDir, PathBuf, thread::JoinHandle<Vec<String>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("babeld.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let h = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(banner.as_bytes()).unwrap();
            let mut got = Vec::new();
            let mut buf = Vec::new();
            for answer in answers {
                // Read one request line.
                loop {
                    if let Some(i) = buf.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=i).collect();
                        got.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
                        break;
                    }
                    let mut chunk = [0u8; 1024];
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return got,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if s.write_all(&answer).is_err() {
                    return got;
                }
            }
            got
        });
        (dir, path, h)
    }

    const T: Duration = Duration::from_secs(2);

    #[test]
    fn reads_the_banner_then_one_reply_per_request() {
        let (_d, path, h) = fake_babeld(
            BANNER,
            vec![
                b"ok\n".to_vec(),
                b"add interface tw1 up true\nadd route 1 prefix fd00::1/128\nok\n".to_vec(),
                b"no No such interface\n".to_vec(),
                b"bad\n".to_vec(),
                b"no\n".to_vec(),
            ],
        );
        let mut c = ControlClient::connect(&path, T).unwrap();
        assert_eq!(c.banner().protocol, "1.0");
        assert_eq!(c.banner().version.as_deref(), Some("babeld-1.12.1"));
        assert_eq!(c.banner().my_id.as_deref(), Some("02:00:00:00:00:00:00:01"));
        assert!(c.request("interface tw1 rxcost 256").unwrap().is_empty());
        assert_eq!(c.request("dump").unwrap(), vec!["add interface tw1 up true", "add route 1 prefix fd00::1/128"]);
        match c.request("flush interface tw9").unwrap_err() {
            ControlError::Refused { request, message } => {
                assert_eq!(request, "flush interface tw9");
                assert_eq!(message.as_deref(), Some("No such interface"));
            }
            e => panic!("{e}"),
        }
        assert!(matches!(c.request("gibberish").unwrap_err(), ControlError::Bad(r) if r == "gibberish"));
        assert!(matches!(c.request("flush interface x").unwrap_err(), ControlError::Refused { message: None, .. }));
        // The scripted side saw exactly our requests.
        assert_eq!(h.join().unwrap().len(), 5);
    }

    #[test]
    fn garbage_and_invalid_utf8_are_data_lines_not_panics() {
        let mut junk = b"\xff\xfe garbage \x00\x01\nadd route\r\n\n   \nok\n".to_vec();
        junk.extend_from_slice(b"");
        let (_d, path, _h) = fake_babeld(BANNER, vec![junk]);
        let mut c = ControlClient::connect(&path, T).unwrap();
        let lines = c.request("dump").unwrap();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].contains("garbage"));
        assert_eq!(lines[1], "add route", "CR LF is accepted");
    }

    #[test]
    fn an_overlong_line_is_an_error() {
        let mut long = vec![b'a'; MAX_LINE + 10];
        long.extend_from_slice(b"\nok\n");
        let (_d, path, _h) = fake_babeld(BANNER, vec![long]);
        let mut c = ControlClient::connect(&path, T).unwrap();
        assert!(matches!(c.request("dump").unwrap_err(), ControlError::LineTooLong));

        // Even without a newline in sight.
        let (_d, path, _h) = fake_babeld(BANNER, vec![vec![b'b'; MAX_LINE * 3]]);
        let mut c = ControlClient::connect(&path, T).unwrap();
        assert!(matches!(c.request("dump").unwrap_err(), ControlError::LineTooLong));
    }

    #[test]
    fn a_disconnect_mid_reply_and_silence_are_errors() {
        let (_d, path, _h) = fake_babeld(BANNER, vec![b"add route 1 prefix".to_vec()]);
        let mut c = ControlClient::connect(&path, T).unwrap();
        assert!(matches!(c.request("dump").unwrap_err(), ControlError::Closed));

        // A peer that never answers: the deadline holds.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let h = thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            thread::sleep(Duration::from_millis(800));
            drop(s);
        });
        let start = Instant::now();
        let err = ControlClient::connect(&path, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, ControlError::Timeout(_)), "{err}");
        assert!(start.elapsed() < Duration::from_millis(700));
        h.join().unwrap();
    }

    #[test]
    fn a_wrong_banner_or_no_socket_is_refused() {
        let (_d, path, _h) = fake_babeld("ALTHEA 0.1\nok\n", vec![]);
        assert!(
            matches!(ControlClient::connect(&path, T).unwrap_err(), ControlError::NotBabel(b) if b == "ALTHEA 0.1")
        );
        let err = ControlClient::connect(Path::new("/nonexistent/babeld.sock"), T).unwrap_err();
        assert!(matches!(err, ControlError::Connect(_)));
    }

    #[test]
    fn requests_babeld_would_not_answer_are_not_sent() {
        let (_d, path, h) = fake_babeld(BANNER, vec![b"ok\n".to_vec()]);
        let mut c = ControlClient::connect(&path, T).unwrap();
        assert!(matches!(c.request("dump\nflush interface x").unwrap_err(), ControlError::BadRequest(_)));
        assert!(matches!(c.request(&"x".repeat(2000)).unwrap_err(), ControlError::BadRequest(r) if r.len() == 200));
        c.request("dump").unwrap();
        drop(c);
        assert_eq!(h.join().unwrap(), vec!["dump"], "only the valid request reached the socket");
    }

    #[test]
    fn an_endless_reply_is_cut_off() {
        let mut many = Vec::new();
        for _ in 0..MAX_REPLY_LINES + 1 {
            many.extend_from_slice(b"x\n");
        }
        many.extend_from_slice(b"ok\n");
        let (_d, path, _h) = fake_babeld(BANNER, vec![many]);
        let mut c = ControlClient::connect(&path, Duration::from_secs(10)).unwrap();
        assert!(matches!(c.request("dump").unwrap_err(), ControlError::ReplyTooLong));
    }
}
