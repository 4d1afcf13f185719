//! Where owl keeps its files: the cache folder and the models in it.

use super::*;

/// owl's cache folder: `$OWL_HOME` if set, else the platform cache dir
/// (`$XDG_CACHE_HOME/owl` or `~/.cache/owl` on Linux, `~/Library/Caches/owl` on macOS).
pub fn cache_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("OWL_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    platform_cache_dir().join("owl")
}

/// Where pulled models live: `<cache_dir>/models`.
pub fn models_dir() -> PathBuf {
    cache_dir().join("models")
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(std::env::home_dir)
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(target_os = "macos")]
fn platform_cache_dir() -> PathBuf {
    home_dir().join("Library/Caches")
}

#[cfg(windows)]
fn platform_cache_dir() -> PathBuf {
    std::env::var_os("LOCALAPPDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| home_dir().join("AppData/Local"))
}

#[cfg(not(any(target_os = "macos", windows)))]
fn platform_cache_dir() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        _ => home_dir().join(".cache"),
    }
}

/// `1.5 GiB`, `93.8 MiB`, `512 B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
