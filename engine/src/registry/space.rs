//! What a pull needs and leaves on disk: free space, checked before any byte is
//! fetched; a disk that fills anyway (another writer, a quota, a file size limit)
//! turned into one error naming the path and the space needed, with the partial
//! file removed; and the temp folders of a pull killed mid-way, removed by the
//! next pull of the same model (which holds its lock).

use super::*;

/// Bytes an unprivileged writer may still use in the file system holding `dir`.
#[cfg(unix)]
pub(super) fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the struct it is given from a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

#[cfg(not(unix))]
pub(super) fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

impl Registry {
    /// Refuses a pull the disk cannot hold (what a resumable partial holds already
    /// counts), removing the partial.
    pub(super) fn check_space(&self, entry: &ModelEntry, partial: &Path) -> Result<()> {
        let have = fs::metadata(partial).map_or(0, |m| m.len()).min(entry.size);
        let needed = entry.size - have;
        match free_bytes(&self.dir) {
            Some(free) if free < needed => {
                let _ = fs::remove_file(partial);
                Err(RegistryError::NoSpace {
                    name: entry.name.clone(),
                    path: self.dir.clone(),
                    needed,
                    available: Some(free),
                    cause: "checked before downloading".into(),
                })
            }
            _ => Ok(()),
        }
    }

    /// A fetch error that is the disk's (full, over quota, over a file size limit),
    /// as [`RegistryError::NoSpace`]; None for any other error.
    pub(super) fn no_space(&self, entry: &ModelEntry, partial: &Path, e: &RegistryError) -> Option<RegistryError> {
        let RegistryError::Io { context, source } = e else {
            return None;
        };
        use io::ErrorKind as K;
        if !matches!(source.kind(), K::StorageFull | K::FileTooLarge | K::QuotaExceeded) {
            return None;
        }
        let have = fs::metadata(partial).map_or(0, |m| m.len());
        Some(RegistryError::NoSpace {
            name: entry.name.clone(),
            path: partial.to_path_buf(),
            needed: entry.size.saturating_sub(have),
            available: free_bytes(&self.dir),
            cause: format!("{context}: {source}"),
        })
    }

    /// Temp folders of one model's pull are named after its partial file, so a
    /// pull can tell its own leftovers from another model's running pull.
    pub(super) fn temp_prefix(&self, partial: &Path) -> String {
        let name = partial.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        format!(".{name}.tmp-")
    }

    /// Removes what a killed pull of `entry` left in its temp folders.
    pub(super) fn remove_stale_temp_dirs(&self, entry: &ModelEntry) {
        let prefix = self.temp_prefix(&self.partial_path(entry));
        let Ok(rd) = fs::read_dir(&self.dir) else { return };
        for d in rd.flatten() {
            if d.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_dir_all(d.path());
            }
        }
    }
}
