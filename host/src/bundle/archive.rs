//! The bundle archive: a gzip-compressed POSIX ustar archive of plain
//! files.
//!
//! Written deterministically, so the same files give the same bytes: the
//! manifest first, then the signature, then every other file in byte order
//! of its path; no directory entries; each header with mode 0644, owner 0,
//! empty user and group names and time 0; the gzip header with time 0 and
//! no file name; compression level 6.
//!
//! Read defensively, because a bundle may come from anyone: only regular
//! files are taken (a symbolic or hard link, a device, a FIFO is refused,
//! directories are skipped), every path must be a plain relative path
//! ([`super::manifest::check_path`]), no path may repeat, and no entry nor
//! the sum of them may exceed the size limit, counted on the decompressed
//! stream itself so that a decompression bomb is stopped as soon as it
//! passes the limit, whatever its headers claim.

use std::io::{Read, Write as _};

use super::manifest::check_path;
use super::{BundleError, MANIFEST_FILE, SIGNATURE_FILE};

/// Room for tar headers and padding beyond the files' own bytes.
const HEADER_ROOM: u64 = 16 * 1024 * 1024;

/// The most entries an archive may hold.
pub const MAX_ENTRIES: usize = 10_000;

/// Writes `files` (path, bytes) as a bundle archive.
pub fn write(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, BundleError> {
    let mut ordered: Vec<&(String, Vec<u8>)> = files.iter().collect();
    let rank = |path: &str| match path {
        MANIFEST_FILE => 0,
        SIGNATURE_FILE => 1,
        _ => 2,
    };
    ordered.sort_by(|a, b| (rank(&a.0), a.0.as_bytes()).cmp(&(rank(&b.0), b.0.as_bytes())));
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in ordered {
        let mut header = tar::Header::new_ustar();
        header.set_path(path).map_err(|error| {
            BundleError::Unsafe(format!(
                "`{path}` cannot be stored in a ustar header: {error}"
            ))
        })?;
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        tar.append(&header, data.as_slice()).map_err(|error| {
            BundleError::Unsafe(format!("writing `{path}` into the archive failed: {error}"))
        })?;
    }
    let tar = tar
        .into_inner()
        .map_err(|error| BundleError::Unsafe(format!("finishing the archive failed: {error}")))?;
    let mut gzip = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::new(6));
    gzip.write_all(&tar)
        .and_then(|()| gzip.try_finish())
        .map_err(|error| BundleError::Unsafe(format!("compressing the archive failed: {error}")))?;
    gzip.finish()
        .map_err(|error| BundleError::Unsafe(format!("compressing the archive failed: {error}")))
}

/// A reader that fails once more than `left` bytes came through it.
struct Limited<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            self.left = 0;
            return Err(std::io::Error::other(Bomb));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// The marker of a stream past its limit.
#[derive(Debug)]
struct Bomb;

impl std::fmt::Display for Bomb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the archive expands past its size limit")
    }
}

impl std::error::Error for Bomb {}

/// Reads a bundle archive's files, refusing anything unsafe (see the
/// module's documentation). `max_size` bounds every entry and their sum.
pub fn read(bytes: &[u8], max_size: u64) -> Result<Vec<(String, Vec<u8>)>, BundleError> {
    let limit = crate::limits::format_size(max_size);
    let bomb = || {
        BundleError::Unsafe(format!(
            "it unpacks to more than {limit} (`[bundles] max_size`): a decompression bomb, or a bundle too large for this host"
        ))
    };
    let broken = |error: std::io::Error| -> BundleError {
        if error.get_ref().is_some_and(|inner| inner.is::<Bomb>()) {
            bomb()
        } else {
            BundleError::Unsafe(format!(
                "it is not a gzip-compressed tar archive, or it is damaged: {error}"
            ))
        }
    };
    let stream = Limited {
        inner: flate2::read::GzDecoder::new(bytes),
        left: max_size.saturating_add(HEADER_ROOM),
    };
    let mut archive = tar::Archive::new(stream);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut total: u64 = 0;
    for entry in archive.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        let path = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| BundleError::Unsafe("an entry's path is not UTF-8".to_owned()))?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Directory => continue,
            tar::EntryType::Symlink | tar::EntryType::Link => {
                return Err(BundleError::Unsafe(format!(
                    "`{path}` is a {} link; a bundle holds plain files only",
                    if kind == tar::EntryType::Symlink {
                        "symbolic"
                    } else {
                        "hard"
                    }
                )));
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                return Err(BundleError::Unsafe(format!(
                    "`{path}` is a device or FIFO; a bundle holds plain files only"
                )));
            }
            other => {
                return Err(BundleError::Unsafe(format!(
                    "`{path}` is a tar entry of type {other:?}; a bundle holds plain files only"
                )));
            }
        }
        let trimmed = path.strip_suffix('/').unwrap_or(&path);
        if trimmed != MANIFEST_FILE && trimmed != SIGNATURE_FILE {
            check_path(trimmed).map_err(|message| {
                BundleError::Unsafe(format!(
                    "{message} (a path that could write outside the bundle)"
                ))
            })?;
        }
        let size = entry.header().size().map_err(broken)?;
        if size > max_size {
            return Err(BundleError::Unsafe(format!(
                "`{path}` claims {}, over the {limit} limit (`[bundles] max_size`)",
                crate::limits::format_size(size)
            )));
        }
        total = total.saturating_add(size);
        if total > max_size {
            return Err(bomb());
        }
        if files.len() >= MAX_ENTRIES {
            return Err(BundleError::Unsafe(format!(
                "it holds more than {MAX_ENTRIES} files"
            )));
        }
        if files.iter().any(|(p, _)| *p == path) {
            return Err(BundleError::Unsafe(format!(
                "`{path}` is in the archive twice; which one counts would depend on the reader"
            )));
        }
        let mut data = Vec::with_capacity(size.min(64 * 1024 * 1024) as usize);
        entry.read_to_end(&mut data).map_err(broken)?;
        if data.len() as u64 != size {
            return Err(BundleError::Unsafe(format!("`{path}` is truncated")));
        }
        files.push((path, data));
    }
    // The rest of the stream, so that gzip's checksum is checked too.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(broken)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> Vec<(String, Vec<u8>)> {
        vec![
            ("workflow.yaml".to_owned(), b"name: demo\n".to_vec()),
            ("bundle.toml".to_owned(), b"format = 1\n".to_vec()),
            ("components/a.wasm".to_owned(), vec![0, 97, 115, 109]),
        ]
    }

    #[test]
    fn writing_is_deterministic_and_reads_back() {
        let one = write(&files()).unwrap();
        let mut shuffled = files();
        shuffled.reverse();
        assert_eq!(
            one,
            write(&shuffled).unwrap(),
            "order of the input does not matter"
        );
        let read = read(&one, 1 << 20).unwrap();
        let paths: Vec<&str> = read.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["bundle.toml", "components/a.wasm", "workflow.yaml"]);
        assert_eq!(read[1].1, vec![0, 97, 115, 109]);
    }

    /// One hand-written tar entry: path, type, data, link target.
    type Crafted<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>);

    /// A tar archive written by hand, entry by entry, gzip-compressed.
    fn crafted(entries: &[Crafted<'_>]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut header = tar::Header::new_gnu();
            // Written raw: `set_path` itself refuses `..`.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            if let Some(link) = link {
                header.set_link_name(link).unwrap();
            }
            header.set_cksum();
            tar.append(&header, *data).unwrap();
        }
        let tar = tar.into_inner().unwrap();
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&tar).unwrap();
        gzip.finish().unwrap()
    }

    #[test]
    fn traversal_links_devices_duplicates_and_bombs_are_refused() {
        let cases: [(&[Crafted<'_>], &str); 6] = [
            (
                &[("../evil", tar::EntryType::Regular, b"x", None)],
                "not a bundle path",
            ),
            (
                &[("/etc/cron.d/evil", tar::EntryType::Regular, b"x", None)],
                "not a bundle path",
            ),
            (
                &[("link", tar::EntryType::Symlink, b"", Some("/etc/passwd"))],
                "symbolic link",
            ),
            (
                &[("hard", tar::EntryType::Link, b"", Some("bundle.toml"))],
                "hard link",
            ),
            (&[("dev", tar::EntryType::Char, b"", None)], "device"),
            (
                &[
                    ("a", tar::EntryType::Regular, b"1", None),
                    ("a", tar::EntryType::Regular, b"2", None),
                ],
                "twice",
            ),
        ];
        for (entries, expected) in cases {
            let error = read(&crafted(entries), 1 << 20).unwrap_err().to_string();
            assert!(error.contains(expected), "{entries:?}: {error}");
        }
        // 8 MiB of zeros compress to a few KiB; the limit is 1 MiB.
        let zeros = vec![0u8; 8 << 20];
        let bomb = crafted(&[("zeros", tar::EntryType::Regular, &zeros, None)]);
        assert!(bomb.len() < 64 * 1024);
        let error = read(&bomb, 1 << 20).unwrap_err().to_string();
        assert!(error.contains("over the 1 MiB limit"), "{error}");
        let many: Vec<(String, Vec<u8>)> = (0..4)
            .map(|i| (format!("part{i}"), vec![0u8; 600 * 1024]))
            .collect();
        let error = read(&write(&many).unwrap(), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(error.contains("decompression bomb"), "{error}");
        let error = read(b"not a gzip file", 1 << 20).unwrap_err().to_string();
        assert!(error.contains("not a gzip-compressed tar"), "{error}");
    }
}
