//! The client commands that act on one lock: `acquire`, `release`, `renew` and `configure`.

use std::time::Duration;

use clap::Args;
use udplock::client::WAIT_MS_MAX;
use udplock::{json, Lease, LockError};

use super::args::{connect, ClientArgs};
use super::duration::{self, ms_u32, ms_u64, U32_MS};
use super::out::escaped;

#[derive(Args)]
pub struct LockArgs {
    /// The resource to lock (1 to 255 bytes).
    resource: String,
    /// Who holds the lock (1 to 255 bytes). The same --client can release it from another
    /// process.
    #[arg(long)]
    client: String,
    /// How long to wait for the lock (acquire) or for an answer (others): 250ms, 5s, 2m (a
    /// bare number is ms); at most 5m. Old spelling: --timeout-ms.
    #[arg(long, alias = "timeout-ms", value_name = "DURATION", default_value = "5s",
          value_parser = duration::ms::<0, WAIT_MS_MAX>)]
    timeout: Duration,
    /// Lease length (acquire, renew): 30s, 2m, 1h (a bare number is ms); omitted or 0: the
    /// resource's default TTL (acquire) or the hold's current TTL (renew). Old spelling:
    /// --ttl-ms.
    #[arg(long, alias = "ttl-ms", value_name = "DURATION",
          value_parser = duration::ms::<0, U32_MS>)]
    ttl: Option<Duration>,
    #[command(flatten)]
    conn: ClientArgs,
}

#[derive(Args)]
pub struct ConfigureArgs {
    /// The resource to configure.
    resource: String,
    /// Default lease for acquires that name no TTL: 30s, 2m (a bare number is ms); 0 clears
    /// it (the server's default applies). Old spelling: --default-ttl-ms.
    #[arg(long, alias = "default-ttl-ms", value_name = "DURATION",
          value_parser = duration::ms::<0, U32_MS>)]
    default_ttl: Duration,
    #[command(flatten)]
    conn: ClientArgs,
}

/// `udplock acquire`: waits up to `--timeout` for the lock.
pub fn acquire(a: LockArgs) -> Result<(), LockError> {
    let client = connect(&a.conn, None)?;
    let lease = client
        .acquire(&a.resource, &a.client, ms_u64(a.timeout), nonzero(a.ttl))
        .map_err(|e| flag_hint(e, &[("wait ", "--timeout"), ("ttl ", "--ttl")]))?;
    print_lease("acquired", &a, &lease);
    Ok(())
}

/// `udplock release`: gives back one hold.
pub fn release(a: LockArgs) -> Result<(), LockError> {
    let client = connect(&a.conn, Some(ms_u64(a.timeout)))?;
    let left = client.release(&a.resource, &a.client)?;
    if a.conn.json {
        println!(
            "{}",
            json::to_line(&json::Released {
                resource: &a.resource,
                client: &a.client,
                hold_count: left,
            })
        );
    } else if left == 0 {
        println!(
            "released {} (now free of {})",
            escaped(&a.resource),
            escaped(&a.client)
        );
    } else {
        println!(
            "released one hold of {}; {} still holds it {left} time(s)",
            escaped(&a.resource),
            escaped(&a.client)
        );
    }
    Ok(())
}

/// `udplock renew`: extends the lease of a held lock.
pub fn renew(a: LockArgs) -> Result<(), LockError> {
    let client = connect(&a.conn, Some(ms_u64(a.timeout)))?;
    let lease = client
        .renew(&a.resource, &a.client, nonzero(a.ttl))
        .map_err(|e| flag_hint(e, &[("ttl ", "--ttl")]))?;
    print_lease("renewed", &a, &lease);
    Ok(())
}

/// `udplock configure`: sets or clears a resource's default TTL.
pub fn configure(a: ConfigureArgs) -> Result<(), LockError> {
    let client = connect(&a.conn, None)?;
    let default_ttl_ms = ms_u32(a.default_ttl);
    client
        .configure(&a.resource, nonzero(Some(a.default_ttl)))
        .map_err(|e| flag_hint(e, &[("default ttl ", "--default-ttl")]))?;
    if a.conn.json {
        println!(
            "{}",
            json::to_line(&json::Configured {
                resource: &a.resource,
                default_ttl_ms,
            })
        );
    } else if default_ttl_ms == 0 {
        println!(
            "{}: default TTL cleared (server default applies)",
            escaped(&a.resource)
        );
    } else {
        println!("{}: default TTL {default_ttl_ms} ms", escaped(&a.resource));
    }
    Ok(())
}

/// The answer to `acquire` and `renew`: one JSON object (resource, client, token,
/// hold_count, ttl_ms) or a sentence. The lease shown is the one the hold has from the reply
/// on (spec §6.4), which after a renewal may be longer than the --ttl asked for.
fn print_lease(verb: &str, a: &LockArgs, lease: &Lease) {
    if a.conn.json {
        println!(
            "{}",
            json::to_line(&json::Lease {
                resource: &a.resource,
                client: &a.client,
                token: lease.fencing_token,
                hold_count: lease.hold_count,
                ttl_ms: lease.ttl_ms,
            })
        );
    } else {
        println!(
            "{verb} {} for {}: fencing token {}, hold count {}, lease {} ms",
            escaped(&a.resource),
            escaped(&a.client),
            lease.fencing_token,
            lease.hold_count,
            lease.ttl_ms
        );
    }
}

/// A TTL flag as the client API's milliseconds: the wire's "0 = default" spelled `None`.
fn nonzero(ttl: Option<Duration>) -> Option<u32> {
    ttl.map(ms_u32).filter(|&t| t != 0)
}

/// A refusal the library names in its own words (`ttl 600000 ms is above the server's maximum
/// of 300000 ms`, see `udplock::client`'s limits) with the flag that set the field: for each
/// `(words, flag)`, the flag if the message names the field by those words.
fn flag_hint(e: LockError, fields: &[(&str, &str)]) -> LockError {
    let LockError::InvalidArgument(text) = &e else {
        return e;
    };
    let flags: Vec<&str> = fields
        .iter()
        .filter(|(words, _)| text.contains(words))
        .map(|&(_, flag)| flag)
        .collect();
    if flags.is_empty() {
        return e;
    }
    LockError::InvalidArgument(format!("{text}. Pass a smaller {}", flags.join(" and ")))
}
