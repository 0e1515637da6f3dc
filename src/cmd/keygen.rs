//! `udplock keygen`: a new cluster key file.

use std::path::PathBuf;

use clap::Args;
use udplock::LockError;

#[derive(Args)]
pub struct KeygenArgs {
    /// The key file to create (it must not exist).
    path: PathBuf,
}

/// `udplock keygen PATH`: a new random key in a new file, mode 0600.
pub fn run(a: KeygenArgs) -> Result<(), LockError> {
    use udplock::cluster::keys;
    let key = keys::random_key();
    keys::create(&a.path, &[Some(key)]).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => LockError::InvalidArgument(format!(
            "{} exists: not replaced (a key in use would be lost); remove it first or name \
             another file",
            a.path.display()
        )),
        _ => LockError::InternalError(format!("cannot write {}: {e}", a.path.display())),
    })?;
    let id = udplock_protocol::ClusterKey::new(&key).id();
    println!(
        "wrote a new cluster key (key id {id:08x}) to {} (mode 0600). Copy it to every node, \
         keeping it secret, and start each with --cluster-key-file {}",
        a.path.display(),
        a.path.display()
    );
    Ok(())
}
