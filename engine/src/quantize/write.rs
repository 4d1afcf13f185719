//! Streaming the planned file: one output, or parts named as llama-gguf-split
//! names them (`PREFIX-00001-of-00003.gguf`, metadata in the first part, every
//! part with `split.no` / `split.count` / `split.tensors.count`). Each part goes
//! to a temporary file beside its final name; all are renamed only once every
//! part is complete, so a failed or cut run leaves nothing under the final names.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::{convert, Plan, PlanEntry, QuantizeError};
use crate::gguf::{Gguf, GgufWriter, Metadata, TensorEntry, DEFAULT_ALIGNMENT};

/// `--split-max-size` as llama-gguf-split reads it: a positive count of
/// megabytes (`M`, 10^6 bytes) or gigabytes (`G`, 10^9).
pub fn parse_split_size(s: &str) -> Result<u64, QuantizeError> {
    let bad = || {
        QuantizeError::Recipe(format!(
            "--split-max-size `{s}`: give a positive number of megabytes or gigabytes, e.g. 500M or 2G"
        ))
    };
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let mult: u64 = match unit {
        "M" | "m" => 1_000_000,
        "G" | "g" => 1_000_000_000,
        _ => return Err(bad()),
    };
    match num.parse::<u64>() {
        Ok(n) if n > 0 => n.checked_mul(mult).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// The part files of `out` split `count` ways: `out` without `.gguf`, then
/// `-NNNNN-of-MMMMM.gguf`.
pub fn split_part_paths(out: &Path, count: usize) -> Vec<PathBuf> {
    let s = out.to_string_lossy();
    let prefix = s.strip_suffix(".gguf").unwrap_or(&s);
    (1..=count)
        .map(|i| PathBuf::from(format!("{prefix}-{i:05}-of-{count:05}.gguf")))
        .collect()
}

/// Groups the plan's tensors into parts of at most `max` bytes of (padded)
/// tensor data each; a tensor larger than `max` gets a part of its own.
fn group(plan: &Plan, max: u64, align: u64) -> Vec<Vec<&PlanEntry>> {
    let mut parts: Vec<Vec<&PlanEntry>> = vec![Vec::new()];
    let mut cur = 0u64;
    for e in &plan.tensors {
        let n = e.bytes.next_multiple_of(align);
        if cur > 0 && cur + n > max {
            parts.push(Vec::new());
            cur = 0;
        }
        cur += n;
        parts.last_mut().expect("never empty").push(e);
    }
    parts
}

/// Writes the planned file to `out`, or with `split_max` its parts (see
/// [`split_part_paths`]). `progress` is called after each tensor with the input
/// bytes done. Returns the paths written and their total size.
pub fn write(
    g: &Gguf,
    plan: &Plan,
    out: &Path,
    split_max: Option<u64>,
    mut progress: impl FnMut(u64),
) -> Result<(Vec<PathBuf>, u64), QuantizeError> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(QuantizeError::NoOutputDir(dir));
    }
    let align = GgufWriter::new()
        .with_metadata(plan.metadata.clone())
        .alignment()?;
    let (parts, paths) = match split_max {
        None => (vec![plan.tensors.iter().collect()], vec![out.to_path_buf()]),
        Some(max) => {
            let parts = group(plan, max, align);
            let paths = split_part_paths(out, parts.len());
            (parts, paths)
        }
    };
    let n_parts = parts.len();
    let mut done = Vec::with_capacity(n_parts);
    let mut total = 0u64;
    for (i, (tensors, path)) in parts.iter().zip(&paths).enumerate() {
        let metadata = match split_max {
            None => plan.metadata.clone(),
            Some(_) => part_metadata(&plan.metadata, i, n_parts, plan.tensors.len()),
        };
        let io = |source| QuantizeError::Io {
            path: path.clone(),
            source,
        };
        let tmp = tempfile::Builder::new()
            .prefix(".owl-quantize-")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(io)?;
        total += write_one(g, &metadata, tensors, tmp.as_file(), path, &mut progress)?;
        tmp.as_file().sync_all().map_err(io)?;
        // A temporary file is private (0600); the model is an ordinary file.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let perms = std::fs::Permissions::from_mode(0o644);
            tmp.as_file().set_permissions(perms).map_err(io)?;
        }
        done.push(tmp);
    }
    for (tmp, path) in done.into_iter().zip(&paths) {
        tmp.persist(path).map_err(|e| QuantizeError::Io {
            path: path.clone(),
            source: e.error,
        })?;
    }
    Ok((paths, total))
}

/// Part `i`'s metadata: the whole set in the first, only the alignment in the
/// others, then the split keys (as llama-gguf-split sets them).
fn part_metadata(all: &Metadata, i: usize, n_parts: usize, n_tensors: usize) -> Metadata {
    let mut md = if i == 0 {
        all.clone()
    } else {
        let mut md = Metadata::new();
        if let Some(a) = all.value("general.alignment") {
            if a.as_i128() != Some(DEFAULT_ALIGNMENT as i128) {
                md.insert("general.alignment", a.clone());
            }
        }
        md
    };
    md.insert("split.no", i as u16);
    md.insert("split.count", n_parts as u16);
    md.insert("split.tensors.count", n_tensors as i32);
    md
}

/// One GGUF file: header, then each tensor converted and padded.
fn write_one(
    g: &Gguf,
    metadata: &Metadata,
    tensors: &[&PlanEntry],
    file: &std::fs::File,
    path: &Path,
    progress: &mut impl FnMut(u64),
) -> Result<u64, QuantizeError> {
    let io = |source| QuantizeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let writer = GgufWriter::new().with_metadata(metadata.clone());
    let entries: Vec<TensorEntry> = tensors
        .iter()
        .map(|e| TensorEntry {
            name: &e.name,
            dims: &e.dims,
            ty: e.to,
        })
        .collect();
    let mut n = writer.write_header(&mut w, &entries)?;
    let align = writer.alignment()?;
    const ZEROS: [u8; 256] = [0; 256];
    for e in tensors {
        let t = &g.tensors()[e.index];
        let data = g.tensor_data(t);
        let converted;
        let bytes: &[u8] = if e.converts() {
            converted = convert(e, data)?;
            &converted
        } else {
            data
        };
        w.write_all(bytes).map_err(io)?;
        n += bytes.len() as u64;
        let mut pad = n.next_multiple_of(align) - n;
        while pad > 0 {
            let k = pad.min(ZEROS.len() as u64);
            w.write_all(&ZEROS[..k as usize]).map_err(io)?;
            pad -= k;
        }
        n = n.next_multiple_of(align);
        progress(t.size as u64);
    }
    w.flush().map_err(io)?;
    Ok(n)
}
