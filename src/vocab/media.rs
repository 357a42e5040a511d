//! Image and archive types from their magic numbers: one sniffer for the intake (415 before a
//! byte goes to compute), compute's decoder, the store's ids and the `Content-Type` of answers.

/// An image container: one compute reads (JPEG, PNG, WebP, GIF), or AVIF, which compute only
/// writes (an AVIF input is an unsupported type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// JPEG (lossy).
    Jpeg,
    /// PNG (lossless).
    Png,
    /// WebP, lossy or lossless.
    WebP,
    /// GIF (only its first frame is read).
    Gif,
    /// AVIF: an output format only.
    Avif,
}

impl Format {
    /// The type from the bytes' magic number, AVIF included.
    pub fn sniff(data: &[u8]) -> Option<Format> {
        if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Format::Jpeg)
        } else if data.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Format::Png)
        } else if data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a") {
            Some(Format::Gif)
        } else if data.len() >= 12 && &data[0..4] == b"RIFF" && &data[8..12] == b"WEBP" {
            Some(Format::WebP)
        } else if data.len() >= 12
            && &data[4..8] == b"ftyp"
            && matches!(&data[8..12], b"avif" | b"avis")
        {
            Some(Format::Avif)
        } else {
            None
        }
    }

    /// Whether compute decodes this type (AVIF is written, never read).
    pub fn is_readable(self) -> bool {
        self != Format::Avif
    }

    /// The MIME type of answers in this format (`image/jpeg`, ...).
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::WebP => "image/webp",
            Format::Gif => "image/gif",
            Format::Avif => "image/avif",
        }
    }

    /// The name used in API answers and form fields (`"format": "webp"`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::WebP => "webp",
            Format::Gif => "gif",
            Format::Avif => "avif",
        }
    }
}

/// A type compute can read: what [`Format::sniff`] finds, AVIF excluded.
pub fn sniff_readable(data: &[u8]) -> Option<Format> {
    Format::sniff(data).filter(|f| f.is_readable())
}

/// An archive container that `FileService.Extract` opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// A ZIP archive.
    Zip,
    /// A plain (ustar/GNU/pax) tar.
    Tar,
    /// A gzip stream (a `.tar.gz` once unpacked).
    Gzip,
    /// A zstd frame (a `.tar.zst` once unpacked).
    Zstd,
}

impl ArchiveKind {
    /// The container from its magic number: ZIP's local header (or an empty ZIP's end record),
    /// gzip's and zstd's magic, or tar's `ustar` at offset 257.
    pub fn sniff(data: &[u8]) -> Option<ArchiveKind> {
        if data.starts_with(b"PK\x03\x04") || data.starts_with(b"PK\x05\x06") {
            Some(ArchiveKind::Zip)
        } else if data.starts_with(&[0x1F, 0x8B]) {
            Some(ArchiveKind::Gzip)
        } else if data.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
            Some(ArchiveKind::Zstd)
        } else if data.len() >= 262 && &data[257..262] == b"ustar" {
            Some(ArchiveKind::Tar)
        } else {
            None
        }
    }

    /// The container's name, as used in messages (`zip`, `tar`, `gzip`, `zstd`).
    pub fn name(self) -> &'static str {
        match self {
            ArchiveKind::Zip => "zip",
            ArchiveKind::Tar => "tar",
            ArchiveKind::Gzip => "gzip",
            ArchiveKind::Zstd => "zstd",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_known_by_their_magic_numbers() {
        assert_eq!(Format::sniff(b"\xFF\xD8\xFF\xE0rest"), Some(Format::Jpeg));
        assert_eq!(Format::sniff(b"\x89PNG\r\n\x1a\nrest"), Some(Format::Png));
        assert_eq!(Format::sniff(b"GIF89a..."), Some(Format::Gif));
        assert_eq!(Format::sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::WebP));
        assert_eq!(Format::sniff(b"\0\0\0\x1cftypavif\0\0"), Some(Format::Avif));
        assert_eq!(sniff_readable(b"\0\0\0\x1cftypavif\0\0"), None);
        assert_eq!(Format::sniff(b"<svg>"), None);
        assert_eq!(Format::sniff(b""), None);
    }

    #[test]
    fn archives_are_known_by_their_magic_numbers() {
        assert_eq!(
            ArchiveKind::sniff(b"PK\x03\x04...."),
            Some(ArchiveKind::Zip)
        );
        assert_eq!(ArchiveKind::sniff(b"\x1f\x8b\x08"), Some(ArchiveKind::Gzip));
        assert_eq!(
            ArchiveKind::sniff(b"\x28\xb5\x2f\xfd"),
            Some(ArchiveKind::Zstd)
        );
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(ArchiveKind::sniff(&tar), Some(ArchiveKind::Tar));
        assert_eq!(ArchiveKind::sniff(b"\xFF\xD8\xFF"), None);
    }
}
