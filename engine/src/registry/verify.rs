//! Is a cached model still the file that was pulled? Loading and listing ask.
//!
//! A pull leaves a sidecar (`.<file>.verified`) with the file's size and mtime and
//! the sha256 it was checked against. While size and mtime still match, the file
//! is trusted without reading it; when either moved, it is hashed again: a match
//! rewrites the sidecar, anything else is [`RegistryError::Changed`], which says
//! to `owl pull` again (a load never silently re-downloads over a changed file).

use super::*;

impl Registry {
    /// `Ok(true)`: the cached file is the one pulled. `Ok(false)`: nothing is under
    /// the cache name. `Err(Changed)`: a file is there but is not what models.lock pins.
    pub fn check_cached(&self, entry: &ModelEntry, opts: &PullOptions) -> Result<bool> {
        let path = self.path(entry);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(format!("cannot stat {}", path.display()))(e)),
        };
        let changed = |why: String| {
            Err(RegistryError::Changed {
                name: entry.name.clone(),
                path: path.clone(),
                why,
            })
        };
        if !meta.is_file() {
            return changed("it is not a regular file".into());
        }
        if meta.len() != entry.size {
            return changed(format!(
                "it is {} bytes, models.lock pins {}",
                meta.len(),
                entry.size
            ));
        }
        if self.sidecar_matches(entry, &meta) {
            return Ok(true);
        }
        let got = sha256_file(&path, &format!("verifying {}", entry.name), opts)?;
        if got != entry.sha256.to_ascii_lowercase() {
            return changed(format!(
                "its sha256 is {got}, models.lock pins {}",
                entry.sha256.to_ascii_lowercase()
            ));
        }
        self.write_sidecar(entry, &path);
        Ok(true)
    }

    /// The sidecar vouches for this size and mtime.
    pub(super) fn sidecar_matches(&self, entry: &ModelEntry, meta: &fs::Metadata) -> bool {
        fs::read_to_string(self.sidecar_path(entry)).ok() == Some(sidecar_line(entry, meta))
    }
}
