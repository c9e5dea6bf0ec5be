//! The highest epoch this node ever granted, kept in `data_dir/NAME` (rule 3): written and
//! synced before the grant that uses it is sent, read at boot.

use crate::error::RuntimeError;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One node's epoch file.
#[derive(Debug, Clone)]
pub struct EpochStore {
    path: PathBuf,
}

impl EpochStore {
    /// The store of node `name` under `data_dir` (the directory is created if missing).
    pub fn open(data_dir: &Path, name: &str) -> Result<Self, RuntimeError> {
        fs::create_dir_all(data_dir).map_err(|source| Self::err(data_dir, source))?;
        Ok(Self { path: data_dir.join(name) })
    }

    fn err(path: &Path, source: std::io::Error) -> RuntimeError {
        RuntimeError::EpochStore { path: path.display().to_string(), source }
    }

    /// The stored epoch, 0 when none was stored yet. A file that is not a number is an error:
    /// starting from 0 could reuse an epoch.
    pub fn load(&self) -> Result<u64, RuntimeError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => text.trim().parse().map_err(|_| {
                Self::err(&self.path, std::io::Error::new(std::io::ErrorKind::InvalidData, "not an epoch number"))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Self::err(&self.path, e)),
        }
    }

    /// Store `epoch` durably: write a temporary file, sync it, rename it over the old one, and
    /// sync the directory.
    pub fn store(&self, epoch: u64) -> Result<(), RuntimeError> {
        let tmp = self.path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            writeln!(f, "{epoch}")?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| Self::err(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_epoch_is_read_back_and_none_reads_as_zero() {
        let dir = std::env::temp_dir().join(format!("roster-epoch-{}", uuid::Uuid::new_v4()));
        let store = EpochStore::open(&dir, "a").unwrap();
        assert_eq!(store.load().unwrap(), 0);
        store.store(1_700_000_000_123).unwrap();
        assert_eq!(EpochStore::open(&dir, "a").unwrap().load().unwrap(), 1_700_000_000_123);
        fs::write(dir.join("a"), "garbage").unwrap();
        assert!(store.load().is_err(), "a corrupt store must not read as 0");
        fs::remove_dir_all(dir).unwrap();
    }
}
