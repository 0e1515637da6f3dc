//! `udplock keygen`: a new cluster key file, or (`--client`) a new client key line.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use clap::Args;
use udplock::{ClientKey, LockError};

#[derive(Args)]
pub struct KeygenArgs {
    /// The key file to create (it must not exist). With --client it may be left out: the
    /// key line is then printed on stdout.
    #[arg(required_unless_present = "client")]
    path: Option<PathBuf>,
    /// Make a client key instead (README "Client keys"): one line `<64 hex digits>
    /// <prefix>...`, after a comment naming its key id. The same line goes into the servers'
    /// client key file (where the prefixes say which client ids the key may act for) and
    /// into the file its clients read with --client-key-file (which only uses the key).
    #[arg(long, requires = "prefix")]
    client: bool,
    /// With --client: a client-id prefix the key authorizes (the id's first bytes; `*` for
    /// every id; `\xNN` for any byte). Repeat it, or separate prefixes with commas.
    #[arg(long, value_delimiter = ',', requires = "client")]
    prefix: Vec<String>,
}

/// `udplock keygen PATH`: a new random key in a new file, mode 0600; `udplock keygen
/// --client --prefix P [PATH]`: a new client key line, in a new file or on stdout.
pub fn run(a: KeygenArgs) -> Result<(), LockError> {
    if a.client {
        return client_key(&a);
    }
    let path = a.path.expect("clap requires PATH without --client");
    use udplock::cluster::keys;
    let key = keys::random_key();
    keys::create(&path, &[Some(key)]).map_err(|e| create_error(&path, e))?;
    let id = udplock_protocol::ClusterKey::new(&key).id();
    println!(
        "wrote a new cluster key (key id {id:08x}) to {} (mode 0600). Copy it to every node, \
         keeping it secret, and start each with --cluster-key-file {}",
        path.display(),
        path.display()
    );
    Ok(())
}

fn create_error(path: &std::path::Path, e: std::io::Error) -> LockError {
    match e.kind() {
        std::io::ErrorKind::AlreadyExists => LockError::InvalidArgument(format!(
            "{} exists: not replaced (a key in use would be lost); remove it first or name \
             another file",
            path.display()
        )),
        _ => LockError::InternalError(format!("cannot write {}: {e}", path.display())),
    }
}

/// The text of a new client key: a comment with its key id, then its key file line.
pub fn client_key_text(secret: &[u8; 32], prefixes: &[String]) -> String {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let id = ClientKey::new(*secret).key_id();
    format!(
        "# client key {id:08x}, for client ids starting with {}\n{hex} {}\n",
        prefixes.join(" or "),
        prefixes.join(" ")
    )
}

fn client_key(a: &KeygenArgs) -> Result<(), LockError> {
    if let Some(bad) = a
        .prefix
        .iter()
        .find(|p| p.is_empty() || p.chars().any(char::is_whitespace) || p.starts_with('#'))
    {
        return Err(LockError::InvalidArgument(format!(
            "--prefix {bad:?}: a prefix is not empty, has no spaces (write \\x20) and does not \
             start with #"
        )));
    }
    let text = client_key_text(&udplock::cluster::keys::random_key(), &a.prefix);
    let Some(path) = &a.path else {
        println!("{}", text.trim_end());
        return Ok(());
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| create_error(path, e))?;
    (file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(|e| create_error(path, e))?;
    let first = text.lines().next().unwrap_or_default();
    println!(
        "wrote a new client key to {} (mode 0600): {}. Append its key line to the servers' \
         --client-key-file, and give this file to the clients it is for (--client-key-file \
         {}), keeping it secret",
        path.display(),
        first.trim_start_matches("# "),
        path.display()
    );
    Ok(())
}
