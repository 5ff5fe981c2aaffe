//! A small RAII temporary directory (no external crate).

use std::fs;
use std::path::{Path, PathBuf};

use crate::os;

/// A directory that is removed, with everything in it, when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: Option<PathBuf>,
}

/// Create a fresh directory `<system temp dir>/<prefix>-<pid>-<counter>-<random>`.
pub fn temp_dir(prefix: &str) -> TempDir {
    TempDir::new_in(&std::env::temp_dir(), prefix)
}

impl TempDir {
    /// Create a fresh directory `<parent>/<prefix>-<pid>-<counter>-<random>` (mode 0755, so a
    /// server running as another user can reach what is inside).
    pub fn new_in(parent: &Path, prefix: &str) -> TempDir {
        os::make_dir(parent, 0o755);
        loop {
            let path = parent.join(os::unique_name(prefix, '-'));
            match fs::create_dir(&path) {
                Ok(()) => {
                    os::set_mode(&path, 0o755);
                    return TempDir { path: Some(path) };
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("cannot create {}: {e}", path.display()),
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.path.as_deref().expect("path is only taken by keep()")
    }

    /// `self.path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path().join(rel)
    }

    /// Keep the directory on disk (for debugging a failure) and return its path.
    pub fn keep(mut self) -> PathBuf {
        self.path.take().expect("path is only taken by keep()")
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = fs::remove_dir_all(path);
        }
    }
}
