//! Feeds arbitrary bytes to every decoder. The contract (protocol/src/lib.rs): no panic, and
//! whatever decodes re-encodes to the same bytes (canonical form). An authenticated
//! node-to-node datagram (spec §8.11) re-encodes to the same bytes up to its MAC, which only a
//! key can remake: its body re-encodes, and its flags and trailer fields compare equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use udplock_protocol::header::HeaderIds;
use udplock_protocol::{
    AuthTrailer, ClusterKey, Flags, LogCommand, MembersReply, MembersRequest, NodeSettingsReply, NodeSettingsRequest,
    PeerDatagram, PeerRecord, PeerSettings, PeerWriter, RemoveReply, RemoveRequest, Reply, Request,
    ShardStatusReply, ShardStatusRequest, AUTH_MAC_LEN, AUTH_TRAILER_LEN, DATAGRAM_LEN_MAX, LOG_COMMAND_LEN_MAX,
    PEER_DATAGRAM_LEN_MAX,
};

/// `plain` (an unauthenticated re-encoding of `data`'s header and body) and `auth` (the
/// trailer the decoder read from `data`) are `data`, but for the MAC.
fn assert_same_node_datagram(plain: &[u8], auth: Option<AuthTrailer>, data: &[u8], what: &str) {
    let Some(t) = auth else {
        assert_eq!(plain, data, "decoded {what} is not canonical");
        return;
    };
    let n = plain.len();
    assert_eq!(data.len(), n + AUTH_TRAILER_LEN, "{what}: trailer length");
    let flags = u16::from_be_bytes([plain[4], plain[5]]) | Flags::AUTH.bits();
    assert_eq!(&data[4..6], &flags.to_be_bytes(), "{what}: flags");
    assert_eq!(&data[..4], &plain[..4], "{what}: header is not canonical");
    assert_eq!(
        &data[6..n],
        &plain[6..],
        "{what}: header or body is not canonical"
    );
    let mut fields = [0u8; AUTH_TRAILER_LEN - AUTH_MAC_LEN];
    for (i, v) in [t.to, t.incarnation, t.peer_incarnation, t.seq]
        .iter()
        .enumerate()
    {
        fields[i * 8..i * 8 + 8].copy_from_slice(&v.to_be_bytes());
    }
    fields[32..36].copy_from_slice(&t.key_id.to_be_bytes());
    assert_eq!(
        &data[n..n + fields.len()],
        &fields,
        "{what}: trailer is not canonical"
    );
}

fuzz_target!(|data: &[u8]| {
    let _ = HeaderIds::peek(data);
    let _ = ClusterKey::new(&[7; 32]).verify(data);
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
    if let Ok(req) = MembersRequest::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req
            .encode_padded(&mut out, data.len())
            .expect("a decoded MEMBERS encodes");
        assert_eq!(&out[..n], data, "decoded MEMBERS is not canonical");
    }
    if let Ok(reply) = MembersReply::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply
            .encode(&mut out)
            .expect("a decoded MEMBERS_REPLY encodes");
        assert_eq!(
            &out[..n],
            &data[..n],
            "decoded MEMBERS_REPLY is not canonical"
        );
        assert!(data[n..].iter().all(|&b| b == 0));
    }
    if let Ok(d) = PeerDatagram::decode(data) {
        let mut out = [0u8; PEER_DATAGRAM_LEN_MAX];
        let room = if d.auth.is_some() {
            AUTH_TRAILER_LEN
        } else {
            0
        };
        let mut w = PeerWriter::with_trailer_room(&mut out, d.header, room);
        for record in d.all_records() {
            let pushed = match record {
                PeerRecord::Raft { shard, msg } => w.push(shard, &msg),
                PeerRecord::Swim(msg) => w.push_swim(&msg),
            };
            pushed.expect("a decoded record re-encodes");
        }
        assert_eq!(w.record_count(), d.record_count());
        let n = w.finish();
        assert_same_node_datagram(&out[..n], d.auth, data, "PEER datagram");
    }
    if let Ok(p) = PeerSettings::decode(data) {
        let mut out = [0u8; PEER_DATAGRAM_LEN_MAX];
        let n = p.encode(&mut out).expect("decoded PEER_SETTINGS encodes");
        assert_same_node_datagram(&out[..n], p.auth, data, "PEER_SETTINGS");
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
        assert_eq!(
            &out[..n],
            &data[..n],
            "decoded NODE_SETTINGS_REPLY is not canonical"
        );
        assert!(data[n..].iter().all(|&b| b == 0));
    }
    // REMOVE (spec §4.10): canonical up to the key id and the MAC, which only the sender's key
    // remakes; re-encoded with the fuzzer's key, it verifies with that key.
    let _ = ClusterKey::new(&[7; 32]).verify_admin(data);
    if let Ok(req) = RemoveRequest::decode(data) {
        let key = ClusterKey::new(&[7; 32]);
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = req.encode(&mut out, &key).expect("a decoded REMOVE encodes");
        assert_eq!(n, data.len(), "decoded REMOVE has another length");
        assert_eq!(&out[..48], &data[..48], "decoded REMOVE is not canonical");
        assert_eq!(&out[52..60], &data[52..60], "decoded REMOVE is not canonical");
        assert!(key.verify_admin(&out[..n]));
    }
    if let Ok(reply) = RemoveReply::decode(data) {
        let mut out = [0u8; DATAGRAM_LEN_MAX];
        let n = reply.encode(&mut out).expect("a decoded REMOVE_REPLY encodes");
        assert_eq!(&out[..n], &data[..n], "decoded REMOVE_REPLY is not canonical");
        assert!(data[n..].iter().all(|&b| b == 0));
    }
    if let Ok(cmd) = LogCommand::decode(data) {
        let mut out = [0u8; LOG_COMMAND_LEN_MAX];
        let n = cmd.encode(&mut out).expect("a decoded log command encodes");
        assert_eq!(&out[..n], data, "decoded log command is not canonical");
    }
});
