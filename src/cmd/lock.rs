//! The client commands that act on one lock: `acquire`, `release`, `renew` and `configure`.

use clap::Args;
use udplock::{json, Lease, LockError};

use super::args::{connect, ClientArgs};

#[derive(Args)]
pub struct LockArgs {
    /// The resource to lock (1 to 255 bytes).
    resource: String,
    /// Who holds the lock (1 to 255 bytes). The same --client can release it from another
    /// process.
    #[arg(long)]
    client: String,
    /// How long to wait for the lock (acquire) or for an answer (others), in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    /// Lease length in milliseconds (acquire, renew); omitted or 0: the resource's default
    /// TTL (acquire) or the hold's current TTL (renew).
    #[arg(long)]
    ttl_ms: Option<u32>,
    #[command(flatten)]
    conn: ClientArgs,
}

#[derive(Args)]
pub struct ConfigureArgs {
    /// The resource to configure.
    resource: String,
    /// Default lease for acquires that name no TTL; 0 clears it (server default applies).
    #[arg(long)]
    default_ttl_ms: u32,
    #[command(flatten)]
    conn: ClientArgs,
}

/// `udplock acquire`: waits up to `--timeout-ms` for the lock.
pub fn acquire(a: LockArgs) -> Result<(), LockError> {
    let client = connect(&a.conn, None)?;
    let lease = client.acquire(&a.resource, &a.client, a.timeout_ms, nonzero(a.ttl_ms))?;
    print_lease("acquired", &a, &lease);
    Ok(())
}

/// `udplock release`: gives back one hold.
pub fn release(a: LockArgs) -> Result<(), LockError> {
    let client = connect(&a.conn, Some(a.timeout_ms))?;
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
        println!("released {} (now free of {})", a.resource, a.client);
    } else {
        println!(
            "released one hold of {}; {} still holds it {left} time(s)",
            a.resource, a.client
        );
    }
    Ok(())
}

/// `udplock renew`: extends the lease of a held lock.
pub fn renew(a: LockArgs) -> Result<(), LockError> {
    let client = connect(&a.conn, Some(a.timeout_ms))?;
    let lease = client.renew(&a.resource, &a.client, nonzero(a.ttl_ms))?;
    print_lease("renewed", &a, &lease);
    Ok(())
}

/// `udplock configure`: sets or clears a resource's default TTL.
pub fn configure(a: ConfigureArgs) -> Result<(), LockError> {
    let client = connect(&a.conn, None)?;
    let ttl = (a.default_ttl_ms != 0).then_some(a.default_ttl_ms);
    client.configure(&a.resource, ttl)?;
    if a.conn.json {
        println!(
            "{}",
            json::to_line(&json::Configured {
                resource: &a.resource,
                default_ttl_ms: a.default_ttl_ms,
            })
        );
    } else if a.default_ttl_ms == 0 {
        println!(
            "{}: default TTL cleared (server default applies)",
            a.resource
        );
    } else {
        println!("{}: default TTL {} ms", a.resource, a.default_ttl_ms);
    }
    Ok(())
}

/// The answer to `acquire` and `renew`: one JSON object (resource, client, token,
/// hold_count, ttl_ms) or a sentence. The lease shown is the one the hold has from the reply
/// on (spec §6.4), which after a renewal may be longer than the --ttl-ms asked for.
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
            a.resource, a.client, lease.fencing_token, lease.hold_count, lease.ttl_ms
        );
    }
}

/// The wire's "0 = default" spelled as the client API's `None`.
fn nonzero(ttl_ms: Option<u32>) -> Option<u32> {
    ttl_ms.filter(|&t| t != 0)
}
