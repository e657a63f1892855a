//! Feeds arbitrary bytes to the speed-test parsers: the receipt decoder (and its verification),
//! and a stream of protocol frames as a server reads them from a client and as a client reads
//! them from a server. Whatever decodes must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollway_core::NodeId;
use tollway_speedtest::proto::{ClientMsg, Header, ServerMsg, HEADER_LEN};
use tollway_speedtest::Receipt;

/// Parse `data` as back-to-back frames, as the side receiving them would.
fn frames(mut data: &[u8], from_client: bool) {
    while data.len() >= HEADER_LEN {
        let Ok(header) = Header::parse([data[0], data[1], data[2]], from_client) else { return };
        let Some(payload) = data.get(HEADER_LEN..HEADER_LEN + header.len) else { return };
        if !header.is_data() {
            if from_client {
                if let Ok(m) = ClientMsg::decode(header, payload) {
                    assert_eq!(m.encode(), &data[..HEADER_LEN + header.len]);
                }
            } else if let Ok(m) = ServerMsg::decode(header, payload) {
                // A Refused's text is re-encoded as is (at most its limit), so equal too.
                assert_eq!(m.encode(), &data[..HEADER_LEN + header.len]);
            }
        }
        data = &data[HEADER_LEN + header.len..];
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the parser.
    let Some((which, rest)) = data.split_first() else { return };
    match which % 3 {
        0 => {
            if let Ok(r) = Receipt::decode(rest) {
                assert_eq!(r.encode(), rest);
                let key = r.measurement.server_key;
                let (nonce, client, path) = (r.measurement.client_nonce, r.measurement.client, r.measurement.path_label);
                let _ = r.verify(&key, &nonce, &client, &path);
                let _ = Receipt::decode_and_verify(rest, &NodeId([0; 32]), &[0; 32], &NodeId([0; 32]), &[0; 32]);
            }
        }
        1 => frames(rest, true),
        _ => frames(rest, false),
    }
});
