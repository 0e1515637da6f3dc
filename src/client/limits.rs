//! Naming the field a server refused (issue 11 item 6). The wire's INVALID_ARGUMENT carries
//! no detail (spec §6: a reply is never larger than its request, and its status is all it
//! says), so the client first only knows that *some* field was out of range. The limits a
//! lock table refuses by are its `wait_ms_max` and `ttl_ms_max` (spec §9; `arguments_valid`
//! in `core::lock_table`), which every node reports in NODE_SETTINGS (spec §4.8).
//!
//! Decision: the client asks for them only once a refusal came back, never before sending,
//! so the hot path pays nothing (no extra round trip, no cache to keep fresh when an
//! operator changes a limit) and a refusal costs one more read-only exchange. The error then
//! says which field, the value asked and the server's limit, in the library's own words (the
//! argument names of [`Client::acquire`], no CLI flag). If no node answers, or no asked value
//! is above its limit (a limit changed in between), the generic message stays.

use crate::client::Client;
use crate::error::LockError;
use udplock_protocol::Setting;

/// The values an operation sent that a server checks against its limits.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Asked {
    /// The acquire's wait (`timeout_ms`), in ms.
    pub wait_ms: Option<u64>,
    /// The lease asked for (acquire, renew), in ms; `None` for the default.
    pub ttl_ms: Option<u32>,
    /// The default lease a configure sets, in ms.
    pub default_ttl_ms: Option<u32>,
}

impl Client {
    /// `error` as the caller sees it: an [`LockError::InvalidArgument`] the server answered
    /// becomes one that names the refused field and the server's limit (see the module
    /// docs); every other error is returned as it is.
    pub(super) fn name_refused_field(&self, error: LockError, asked: Asked) -> LockError {
        let LockError::InvalidArgument(_) = error else {
            return error;
        };
        let Some((wait_max, ttl_max)) = self.limits() else {
            return error;
        };
        let mut named = Vec::new();
        if let Some(wait) = asked.wait_ms.filter(|&w| w > wait_max) {
            named.push(format!(
                "wait {wait} ms is above the server's maximum of {wait_max} ms"
            ));
        }
        if let Some(ttl) = asked.ttl_ms.map(u64::from).filter(|&t| t > ttl_max) {
            named.push(format!(
                "ttl {ttl} ms is above the server's maximum of {ttl_max} ms"
            ));
        }
        if let Some(ttl) = asked.default_ttl_ms.map(u64::from).filter(|&t| t > ttl_max) {
            named.push(format!(
                "default ttl {ttl} ms is above the server's maximum of {ttl_max} ms"
            ));
        }
        if named.is_empty() {
            return error;
        }
        LockError::InvalidArgument(format!(
            "the server refused the request: {}; nothing changed",
            named.join(", and ")
        ))
    }

    /// The `wait_ms_max` and `ttl_ms_max` of the first node of the client's servers that
    /// answers NODE_SETTINGS (they must be equal on every node, spec §8.10).
    fn limits(&self) -> Option<(u64, u64)> {
        self.servers().iter().find_map(|&server| {
            let report = self.node_settings(server).ok()?;
            let value = |wanted: Setting| {
                report
                    .settings
                    .iter()
                    .find(|(setting, _)| *setting == wanted)
                    .map(|&(_, v)| v)
            };
            Some((value(Setting::WaitMsMax)?, value(Setting::TtlMsMax)?))
        })
    }
}
