//! Feeds arbitrary bytes to every decoder. The contract (protocol/src/lib.rs): no panic, and
//! whatever decodes re-encodes to the same bytes (canonical form).
#![no_main]

use libfuzzer_sys::fuzz_target;
use udplock_protocol::header::HeaderIds;
use udplock_protocol::{
    LogCommand, NodeSettingsReply, NodeSettingsRequest, PeerDatagram, PeerSettings, PeerWriter,
    Reply, Request, ShardStatusReply, ShardStatusRequest, DATAGRAM_LEN_MAX, LOG_COMMAND_LEN_MAX,
    PEER_DATAGRAM_LEN_MAX,
};

fuzz_target!(|data: &[u8]| {
    let _ = HeaderIds::peek(data);
    if let Ok(req) = Request::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req
            .encode_padded(&mut out, data.len())
            .expect("a decoded request encodes");
        assert_eq!(&out[..n], data, "decoded request is not canonical");
    }
    if let Ok(reply) = Reply::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply.encode(&mut out).expect("a decoded reply encodes");
        assert_eq!(&out[..n], &data[..n], "decoded reply is not canonical");
        assert!(data[n..].iter().all(|&b| b == 0));
    }
    if let Ok(req) = ShardStatusRequest::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req
            .encode_padded(&mut out, data.len())
            .expect("a decoded shard status request encodes");
        assert_eq!(
            &out[..n],
            data,
            "decoded shard status request is not canonical"
        );
    }
    if let Ok(reply) = ShardStatusReply::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply
            .encode(&mut out)
            .expect("a decoded shard status reply encodes");
        assert_eq!(
            &out[..n],
            &data[..n],
            "decoded shard status reply is not canonical"
        );
        assert!(data[n..].iter().all(|&b| b == 0));
    }
    if let Ok(d) = PeerDatagram::decode(data) {
        let mut out = [0u8; PEER_DATAGRAM_LEN_MAX];
        let mut w = PeerWriter::new(&mut out, d.header);
        for (shard, msg) in d.records() {
            w.push(shard, &msg).expect("a decoded record re-encodes");
        }
        assert_eq!(w.record_count(), d.record_count());
        let n = w.finish();
        assert_eq!(&out[..n], data, "decoded PEER datagram is not canonical");
    }
    if let Ok(p) = PeerSettings::decode(data) {
        let mut out = [0u8; PEER_DATAGRAM_LEN_MAX];
        let n = p.encode(&mut out).expect("decoded PEER_SETTINGS encodes");
        assert_eq!(&out[..n], data, "decoded PEER_SETTINGS is not canonical");
    }
    if let Ok(req) = NodeSettingsRequest::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req
            .encode_padded(&mut out, data.len())
            .expect("a decoded NODE_SETTINGS encodes");
        assert_eq!(&out[..n], data, "decoded NODE_SETTINGS is not canonical");
    }
    if let Ok(reply) = NodeSettingsReply::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply
            .encode(&mut out)
            .expect("a decoded NODE_SETTINGS_REPLY encodes");
        assert_eq!(&out[..n], &data[..n], "decoded NODE_SETTINGS_REPLY is not canonical");
        assert!(data[n..].iter().all(|&b| b == 0));
    }
    if let Ok(cmd) = LogCommand::decode(data) {
        let mut out = [0u8; LOG_COMMAND_LEN_MAX];
        let n = cmd.encode(&mut out).expect("a decoded log command encodes");
        assert_eq!(&out[..n], data, "decoded log command is not canonical");
    }
});
