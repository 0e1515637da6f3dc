//! The real file system as a [`Disk`]: a directory, `pwrite`, `ftruncate`, `fdatasync`, and
//! rename for whole-file replacement.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::{Disk, DiskFile};

/// A directory of the file system.
#[derive(Clone, Debug)]
pub struct FsDisk {
    dir: PathBuf,
}

impl FsDisk {
    /// The directory `dir`, created if missing.
    pub fn new(dir: &Path) -> io::Result<FsDisk> {
        std::fs::create_dir_all(dir)?;
        Ok(FsDisk {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Disk for FsDisk {
    type File = File;

    fn open(&self, name: &str, truncate: bool) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(truncate)
            .open(self.dir.join(name))
    }

    fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.dir.join(name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn replace(&self, name: &str, bytes: &[u8], sync: bool) -> io::Result<File> {
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        io::Write::write_all(&mut file, bytes)?;
        if sync {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, self.dir.join(name))?;
        if sync {
            self.sync_dir()?;
        }
        Ok(file)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match std::fs::remove_file(self.dir.join(name)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn exists(&self, name: &str) -> bool {
        self.dir.join(name).exists()
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }
}

impl DiskFile for File {
    fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        // `&File` reads from the file's cursor, which nothing else moves (writes are
        // positional): at open it is at the start.
        let mut reader = self;
        reader.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(bytes, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    #[cfg(target_os = "linux")]
    fn allocate(&self, len: u64) -> io::Result<()> {
        use rustix::fs::{fallocate, FallocateFlags};
        match fallocate(self, FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            // Not on this file system: the appends grow the file, as without.
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn allocate(&self, _len: u64) -> io::Result<()> {
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.sync_data()
    }
}
