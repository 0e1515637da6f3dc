//! KEEPALIVE (spec §4.11): many holds of one shard renewed by one datagram, named by their
//! fencing tokens. The guard renewer batches the holds of a shard into one call per period;
//! this file is the call itself and the reading of its answer.

use udplock_protocol::{shard_of, RequestBody, Tokens, KEEPALIVE_TOKENS_MAX};

use super::operation::Answer;
use super::{lease_validity, ttl_wire, Client, ClientConfig, KeepaliveReport};
use crate::core::time::{Duration, Instant};
use crate::error::LockError;

impl Client {
    /// The shard of `resource_id` (spec §8.2) under this client's shard count: the `shard`
    /// a [`Client::keepalive`] names for a hold of that resource.
    pub fn shard_of(&self, resource_id: &str) -> u32 {
        shard_of(resource_id.as_bytes(), self.config.shards)
    }

    /// Renews, in one datagram, every hold of `shard` that `tokens` names (1 to
    /// [`KEEPALIVE_TOKENS_MAX`] fencing tokens of holds this client was granted in that
    /// shard), each for `ttl_ms` or, with `None`, its current TTL (spec §4.11). Never
    /// shortens a lease. The request names this client's [`ClientConfig::shards`]: a node
    /// whose shard count differs answers [`LockError::InvalidArgument`] (tokens name holds
    /// only within one shard), so a client that keeps holds by keepalive must be configured
    /// with the cluster's shard count (1 for a single node).
    ///
    /// The report says which were renewed and until when they are valid (the lease rule,
    /// counted from the send time of the answered copy). A token whose bit is clear named no
    /// hold when the keepalive applied (released, expired, granted again): stop relying on
    /// that hold at once. An error renews nothing this client may count on; the earlier
    /// validities still stand.
    #[doc(hidden)]
    pub fn keepalive(
        &self,
        shard: u32,
        tokens: &[u64],
        ttl_ms: Option<u32>,
    ) -> Result<KeepaliveReport, LockError> {
        let timeout_ms = self.config.request_timeout_ms;
        let answer = self.keepalive_answer(shard, tokens, ttl_ms, timeout_ms, None)?;
        let valid = lease_validity(answer.lease_ms, self.config.drift_bound_ppm);
        Ok(KeepaliveReport {
            tokens: tokens.to_vec(),
            renewed_bitmap: answer.bitmap,
            lease_ms: answer.lease_ms,
            valid_until: self.boot_instant(answer.lease_start + valid),
        })
    }

    /// [`Client::keepalive`]'s call, ending by `timeout_ms`, each copy waiting at most
    /// `rto_cap` (the guards' renewer sets both), and its answer checked.
    pub(super) fn keepalive_answer(
        &self,
        shard: u32,
        tokens: &[u64],
        ttl_ms: Option<u32>,
        timeout_ms: u64,
        rto_cap: Option<Duration>,
    ) -> Result<KeepaliveAnswer, LockError> {
        let mut buf = [0u8; 8 * KEEPALIVE_TOKENS_MAX];
        let body = keepalive_body(&self.config, shard, tokens, ttl_ms, &mut buf)?;
        let answer = self.call_capped(body, timeout_ms, rto_cap)?;
        check_keepalive(tokens.len(), answer)
    }
}

/// The KEEPALIVE of `tokens` in `shard`, its arguments checked (both clients), the tokens
/// written into `buf`.
pub(super) fn keepalive_body<'a>(
    config: &ClientConfig,
    shard: u32,
    tokens: &[u64],
    ttl_ms: Option<u32>,
    buf: &'a mut [u8; 8 * KEEPALIVE_TOKENS_MAX],
) -> Result<RequestBody<'a>, LockError> {
    if shard >= config.shards {
        return Err(LockError::InvalidArgument(format!(
            "shard must be below the shard count {}, got {shard}",
            config.shards
        )));
    }
    if !(1..=KEEPALIVE_TOKENS_MAX).contains(&tokens.len()) {
        return Err(LockError::InvalidArgument(format!(
            "a keepalive lists 1 to {KEEPALIVE_TOKENS_MAX} tokens, got {}",
            tokens.len()
        )));
    }
    // Both below SHARDS_MAX (4096): `ClientConfig::validate` and the check above.
    Ok(RequestBody::Keepalive {
        shard: shard as u16,
        shards: config.shards as u16,
        ttl_ms: ttl_wire("ttl_ms", ttl_ms)?,
        tokens: Tokens::write(tokens, buf).expect("at most KEEPALIVE_TOKENS_MAX"),
    })
}

/// A KEEPALIVE's answer for `listed` tokens, checked (both clients).
pub(super) fn check_keepalive(listed: usize, answer: Answer) -> Result<KeepaliveAnswer, LockError> {
    let reply = &answer.reply;
    let bitmap = reply.fencing_token;
    // Bits only for listed tokens, as many as counted, a lease exactly when one was
    // renewed (spec §4.11): a reply that breaks this is trusted for none of its holds.
    let beyond = if listed == 64 { 0 } else { bitmap >> listed };
    if beyond != 0
        || bitmap.count_ones() != reply.hold_count
        || (bitmap == 0) != (reply.lease_ms == 0)
    {
        return Err(LockError::InternalError(format!(
            "KEEPALIVE_REPLY disagrees with itself (bitmap {bitmap:#x} for {listed} tokens, hold \
             count {}, lease {} ms): a server bug; rely on none of the holds it names",
            reply.hold_count, reply.lease_ms
        )));
    }
    Ok(KeepaliveAnswer {
        bitmap,
        lease_ms: reply.lease_ms,
        lease_start: answer.lease_start,
    })
}

/// What a KEEPALIVE's answer says, checked: bit `i` of `bitmap` for the `i`-th listed token,
/// the smallest lease granted, and the core send time of the answered copy (the lease rule's
/// start for every renewed hold).
pub(super) struct KeepaliveAnswer {
    pub(super) bitmap: u64,
    pub(super) lease_ms: u32,
    pub(super) lease_start: Instant,
}
