//! File operations as plain synchronous functions (the FileService's work, run on the CPU pool
//! like image work): general-purpose compression (gzip, zstd) and archive extraction (ZIP, tar,
//! tar.gz, tar.zst) with archive-bomb limits checked while unpacking, before memory is spent.
//!
//! Names inside an archive are labels, never paths: nothing is written to disk, and every name
//! is returned relative and normalised ([`clean_name`]) so that a client that does write
//! entries out cannot be steered outside its directory.

use std::io::{self, Read, Write};

use thiserror::Error;

use crate::vocab::media::ArchiveKind;

#[cfg(test)]
mod tests;

/// A general-purpose codec (the proto's `Codec`, UNSPECIFIED already resolved to zstd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// gzip (DEFLATE), levels 1-9.
    Gzip,
    /// Zstandard, levels -7 to 22.
    Zstd,
}

impl Codec {
    /// The name used in error messages (`gzip`, `zstd`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }

    /// The levels this codec takes (0, the default, is always accepted besides).
    pub fn levels(self) -> std::ops::RangeInclusive<i32> {
        match self {
            Codec::Gzip => 1..=9,
            // zstd's negative levels trade ratio for speed; 22 is its slowest, smallest.
            Codec::Zstd => -7..=22,
        }
    }
}

/// Why a file operation failed; the service maps each to a status and ErrorInfo reason.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FileError {
    /// A parameter out of range, such as a level (INVALID_ARGUMENT / BAD_PARAMETER).
    #[error("{0}")]
    BadParameter(String),
    /// An archive above one of [`ArchiveLimits`] (RESOURCE_EXHAUSTED / ARCHIVE_LIMIT).
    #[error("{0}")]
    Limit(String),
    /// Bytes that are not an archive we read, or one that does not parse.
    #[error("{0}")]
    Undecodable(String),
}

/// What an archive may expand to (`compute.archive_*`).
#[derive(Debug, Clone, Copy)]
pub struct ArchiveLimits {
    /// Entries of any kind (directories and links included: each costs work to skip).
    pub max_entries: usize,
    /// Uncompressed bytes of all returned entries, their names included: what one response
    /// may carry.
    pub max_total_bytes: u64,
    /// How many times its compressed size an entry (or a compressed tar stream) may expand.
    pub max_expansion: u64,
}

/// Below this many bytes, expansion is not judged: tar pads every entry to 512 bytes and ends
/// with 1–10 KiB of zeros, which compress to almost nothing.
const EXPANSION_FLOOR: u64 = 64 * 1024;

/// One regular file from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its path inside the archive, cleaned by [`clean_name`].
    pub name: String,
    /// Its uncompressed contents.
    pub data: Vec<u8>,
}

/// Compresses `data` with `codec` at `level` (0 = the codec's default).
pub fn compress(data: &[u8], codec: Codec, level: i32) -> Result<Vec<u8>, FileError> {
    if level != 0 && !codec.levels().contains(&level) {
        let range = codec.levels();
        return Err(FileError::BadParameter(format!(
            "level {level} is out of range for {}: expected {}-{} (0 means the default)",
            codec.name(),
            range.start(),
            range.end()
        )));
    }
    let failed = |e: io::Error| FileError::Undecodable(format!("{} failed: {e}", codec.name()));
    match codec {
        Codec::Gzip => {
            let level = if level == 0 { 6 } else { level as u32 };
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 2),
                flate2::Compression::new(level),
            );
            encoder.write_all(data).map_err(failed)?;
            encoder.finish().map_err(failed)
        }
        Codec::Zstd => {
            let level = if level == 0 {
                zstd::DEFAULT_COMPRESSION_LEVEL
            } else {
                level
            };
            zstd::bulk::compress(data, level).map_err(failed)
        }
    }
}

/// The regular files of a ZIP or (optionally gzip- or zstd-compressed) tar, in archive order.
pub fn extract(archive: &[u8], limits: &ArchiveLimits) -> Result<Vec<Entry>, FileError> {
    let kind = ArchiveKind::sniff(archive).ok_or_else(|| {
        FileError::Undecodable("the data is not a ZIP or tar archive (judged by its bytes)".into())
    })?;
    let mut budget = Budget::new(limits);
    match kind {
        ArchiveKind::Zip => extract_zip(archive, limits, &mut budget),
        ArchiveKind::Tar => extract_tar(archive, &mut budget),
        ArchiveKind::Gzip => {
            let stream = Bounded::new(flate2::read::GzDecoder::new(archive), archive, limits);
            extract_compressed_tar(stream, "gzip", &mut budget)
        }
        ArchiveKind::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(archive)
                .map_err(|e| FileError::Undecodable(format!("not a zstd stream: {e}")))?;
            let stream = Bounded::new(decoder, archive, limits);
            extract_compressed_tar(stream, "zstd", &mut budget)
        }
    }
}

/// What is left of the limits while an archive is unpacked.
struct Budget {
    entries_left: usize,
    bytes_left: u64,
    max_entries: usize,
    max_total: u64,
    entries: Vec<Entry>,
}

impl Budget {
    fn new(limits: &ArchiveLimits) -> Self {
        Budget {
            entries_left: limits.max_entries,
            bytes_left: limits.max_total_bytes,
            max_entries: limits.max_entries,
            max_total: limits.max_total_bytes,
            entries: Vec::new(),
        }
    }

    /// One more entry of any kind.
    fn count_entry(&mut self) -> Result<(), FileError> {
        if self.entries_left == 0 {
            return Err(FileError::Limit(format!(
                "the archive has more than {} entries",
                self.max_entries
            )));
        }
        self.entries_left -= 1;
        Ok(())
    }

    /// Room for a file of `size` bytes named `name`, before it is read.
    fn reserve(&mut self, name: &str, size: u64) -> Result<(), FileError> {
        let cost = size.saturating_add(name.len() as u64 + ENTRY_OVERHEAD);
        if cost > self.bytes_left {
            return Err(FileError::Limit(format!(
                "the archive expands to more than {} bytes (at {name:?}), the most one answer may carry",
                self.max_total
            )));
        }
        self.bytes_left -= cost;
        Ok(())
    }

    fn push(&mut self, name: String, data: Vec<u8>) {
        self.entries.push(Entry { name, data });
    }
}

/// Bytes an entry costs in the answer besides its data (field tags and lengths).
const ENTRY_OVERHEAD: u64 = 16;

fn extract_zip(
    archive: &[u8],
    limits: &ArchiveLimits,
    budget: &mut Budget,
) -> Result<Vec<Entry>, FileError> {
    let bad = |e: zip::result::ZipError| FileError::Undecodable(format!("not a readable ZIP: {e}"));
    let mut zip = zip::ZipArchive::new(io::Cursor::new(archive)).map_err(bad)?;
    // The central directory says how many entries there are: refuse a flood before any is read.
    if zip.len() > limits.max_entries {
        return Err(FileError::Limit(format!(
            "the archive has {} entries, more than the limit of {}",
            zip.len(),
            limits.max_entries
        )));
    }
    for index in 0..zip.len() {
        budget.count_entry()?;
        let mut file = zip.by_index(index).map_err(bad)?;
        if file.is_dir() || file.is_symlink() || !file.is_file() {
            continue; // only regular files are returned
        }
        let raw_name = file.name().map_err(bad)?.into_owned();
        let Some(name) = clean_name(&raw_name) else {
            continue; // nothing left of the name ("/", "..")
        };
        // The declared size is checked first (no memory spent on a lie), then the real one:
        // the reader stops one byte past what the limits allow.
        let allowed = expansion_allowance(file.compressed_size(), limits).min(
            budget
                .bytes_left
                .saturating_sub(name.len() as u64 + ENTRY_OVERHEAD),
        );
        if file.size() > allowed {
            return Err(over_limit(
                &name,
                file.size(),
                file.compressed_size(),
                limits,
                budget,
            ));
        }
        let mut data = Vec::with_capacity(file.size() as usize);
        (&mut file)
            .take(allowed + 1)
            .read_to_end(&mut data)
            .map_err(|e| FileError::Undecodable(format!("entry {name:?} does not unpack: {e}")))?;
        if data.len() as u64 > allowed {
            return Err(over_limit(
                &name,
                data.len() as u64,
                file.compressed_size(),
                limits,
                budget,
            ));
        }
        budget.reserve(&name, data.len() as u64)?;
        budget.push(name, data);
    }
    Ok(std::mem::take(&mut budget.entries))
}

/// The most an entry of `compressed` bytes may expand to.
fn expansion_allowance(compressed: u64, limits: &ArchiveLimits) -> u64 {
    compressed
        .saturating_mul(limits.max_expansion)
        .max(EXPANSION_FLOOR)
}

/// The limit an entry of `size` bytes broke: expansion, or the total.
fn over_limit(
    name: &str,
    size: u64,
    compressed: u64,
    limits: &ArchiveLimits,
    budget: &Budget,
) -> FileError {
    if size > expansion_allowance(compressed, limits) {
        FileError::Limit(format!(
            "entry {name:?} expands from {compressed} to {size} or more bytes, more than {}x (an archive bomb?)",
            limits.max_expansion
        ))
    } else {
        FileError::Limit(format!(
            "the archive expands to more than {} bytes (at {name:?}), the most one answer may carry",
            budget.max_total
        ))
    }
}

fn extract_tar(archive: &[u8], budget: &mut Budget) -> Result<Vec<Entry>, FileError> {
    read_tar(archive, budget, || None)
}

fn extract_compressed_tar<R: Read>(
    stream: Bounded<R>,
    codec: &str,
    budget: &mut Budget,
) -> Result<Vec<Entry>, FileError> {
    let exceeded = stream.exceeded.clone();
    let limit = stream.limit;
    let result = read_tar(stream, budget, || {
        exceeded.get().then(|| {
            FileError::Limit(format!(
                "the {codec} stream expands to more than {limit} bytes (an archive bomb?)"
            ))
        })
    });
    // A stream that turns out not to be a tar (a lone .gz of something else) is undecodable.
    result.map_err(|e| match e {
        FileError::Undecodable(why) => FileError::Undecodable(format!(
            "a {codec} stream that is not a readable tar: {why}"
        )),
        other => other,
    })
}

/// Reads a tar stream; `why_failed` says whether an I/O error was in fact a limit.
fn read_tar<R: Read>(
    reader: R,
    budget: &mut Budget,
    why_failed: impl Fn() -> Option<FileError>,
) -> Result<Vec<Entry>, FileError> {
    let fail = |e: io::Error| why_failed().unwrap_or_else(|| FileError::Undecodable(e.to_string()));
    let mut tar = tar::Archive::new(reader);
    for entry in tar.entries().map_err(fail)? {
        let mut entry = entry.map_err(fail)?;
        budget.count_entry()?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            continue; // directories, links, devices, FIFOs: only regular files are returned
        }
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(name) = clean_name(&raw_name) else {
            continue;
        };
        let size = entry.size();
        budget.reserve(&name, size)?;
        let mut data = Vec::with_capacity(size as usize);
        (&mut entry)
            .take(size)
            .read_to_end(&mut data)
            .map_err(fail)?;
        if (data.len() as u64) < size {
            return Err(FileError::Undecodable(format!(
                "entry {name:?} is truncated: {} of {size} bytes",
                data.len()
            )));
        }
        budget.push(name, data);
    }
    Ok(std::mem::take(&mut budget.entries))
}

/// A decompressing reader that stops (with an error, and `exceeded` set) once it has produced
/// more than the limits allow: the whole stream's expansion and total are judged as it flows.
struct Bounded<R> {
    inner: R,
    produced: u64,
    limit: u64,
    exceeded: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R> Bounded<R> {
    fn new(inner: R, compressed: &[u8], limits: &ArchiveLimits) -> Self {
        // Tar headers and padding come on top of the entries' bytes.
        let framing = (limits.max_entries as u64 + 2) * 1024 + 10 * 1024;
        let limit = expansion_allowance(compressed.len() as u64, limits)
            .min(limits.max_total_bytes.saturating_add(framing));
        Bounded {
            inner,
            produced: 0,
            limit,
            exceeded: Default::default(),
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.produced += n as u64;
        if self.produced > self.limit {
            self.exceeded.set(true);
            return Err(io::Error::other("decompressed stream above its limit"));
        }
        Ok(n)
    }
}

/// An archive name made safe to use as a relative path: `\` read as `/`; leading `/`, drive
/// letters (`C:`), empty, `.` and `..` components dropped; control characters replaced. None
/// when nothing is left.
pub fn clean_name(raw: &str) -> Option<String> {
    let normalised = raw.replace('\\', "/");
    let parts: Vec<String> = normalised
        .split('/')
        .filter(|part| !part.is_empty() && *part != "." && *part != "..")
        .filter(|part| !(part.len() == 2 && part.ends_with(':')))
        .map(|part| {
            part.chars()
                .map(|c| if c.is_control() { '_' } else { c })
                .collect()
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}
