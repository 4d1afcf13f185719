//! sha256 of a file, with a progress bar when a pull shows one.

use super::*;

/// Lower-case hex sha256 of a file.
pub fn sha256_file_hex(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn sha256_file(path: &Path, msg: &str, opts: &PullOptions) -> Result<String> {
    let ctx = || format!("cannot read {}", path.display());
    let len = fs::metadata(path).map_err(io_err(ctx()))?.len();
    let pb = bar(opts, len, msg.to_string());
    let mut f = File::open(path).map_err(io_err(ctx()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(ctx()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        pb.inc(n as u64);
    }
    pb.finish_and_clear();
    Ok(hex(&h.finalize()))
}
