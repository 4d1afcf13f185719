//! A model fetched over HTTP(S): resumed with Range requests after a cut connection.

use super::*;

/// Downloads `url` into `partial`, resuming from what `partial` holds (HTTP Range),
/// and again after a cut connection, up to [`URL_ATTEMPTS`] times.
pub(super) fn fetch_url(entry: &ModelEntry, url: &str, partial: &Path, opts: &PullOptions) -> Result<()> {
    let http = |msg: String| RegistryError::Http {
        url: url.to_string(),
        msg,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut out = OpenOptions::new()
        .create(true)
        .append(false)
        .truncate(false)
        .read(true)
        .write(true)
        .open(partial)
        .map_err(io_err(format!("cannot open {}", partial.display())))?;
    let pb = bar(opts, entry.size, format!("downloading {}", entry.name));
    let mut last_err = String::new();
    for _attempt in 0..URL_ATTEMPTS {
        let mut have = out
            .metadata()
            .map_err(io_err(format!("cannot stat {}", partial.display())))?
            .len();
        if have > entry.size {
            have = 0;
        }
        if have == entry.size {
            pb.finish_and_clear();
            return Ok(());
        }
        pb.set_position(have);
        let mut req = agent.get(url);
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(e) => {
                last_err = e.to_string();
                continue;
            }
        };
        let status = resp.status().as_u16();
        let start = match status {
            206 => {
                let cr = resp
                    .headers()
                    .get("content-range")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                match parse_content_range_start(cr) {
                    Some(s) if s == have => have,
                    _ => {
                        return Err(http(format!(
                            "unexpected Content-Range '{cr}' for bytes={have}-"
                        )))
                    }
                }
            }
            200 => 0,
            416 if have > 0 => {
                // The server has nothing past `have`: start over.
                out.set_len(0)
                    .map_err(io_err("cannot truncate the partial download"))?;
                continue;
            }
            s => return Err(http(format!("HTTP status {s}"))),
        };
        out.set_len(start)
            .and_then(|_| out.seek(SeekFrom::Start(start)))
            .map_err(io_err(format!("cannot write {}", partial.display())))?;
        pb.set_position(start);
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut pos = start;
        let cut = loop {
            match body.read(&mut buf) {
                Ok(0) => break None,
                Ok(n) => {
                    if pos + n as u64 > entry.size {
                        return Err(http(format!(
                            "the server sent more than the expected {} bytes",
                            entry.size
                        )));
                    }
                    out.write_all(&buf[..n])
                        .map_err(io_err(format!("cannot write {}", partial.display())))?;
                    pos += n as u64;
                    pb.set_position(pos);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e.to_string()),
            }
        };
        out.flush()
            .map_err(io_err(format!("cannot write {}", partial.display())))?;
        match cut {
            None if pos == entry.size => {
                pb.finish_and_clear();
                return Ok(());
            }
            None => last_err = format!("connection closed at byte {pos} of {}", entry.size),
            Some(e) => last_err = format!("{e} at byte {pos} of {}", entry.size),
        }
    }
    pb.finish_and_clear();
    Err(http(format!(
        "{last_err} (gave up after {URL_ATTEMPTS} attempts; `owl pull {}` resumes)",
        entry.name
    )))
}

/// `bytes 100-199/200` -> 100.
pub(super) fn parse_content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}
