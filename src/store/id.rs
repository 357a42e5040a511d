//! Object ids: the SHA-256 of the stored bytes in lowercase hex, a dot, and the image's
//! extension (`3f…9a.webp`).
//!
//! An id is the only thing a client can name, and it becomes an object key, so it is parsed
//! strictly: exactly 64 lowercase hex digits and an extension from a fixed list. Anything
//! else (`..`, slashes, percent escapes, uppercase, other extensions, any extra byte) is not
//! an id, and never reaches the store.

use sha2::{Digest, Sha256};

use crate::vocab::media::Format;

/// The image types the store keeps: what compute writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    /// JPEG (`.jpg`).
    Jpeg,
    /// PNG (`.png`).
    Png,
    /// WebP (`.webp`).
    Webp,
    /// AVIF (`.avif`).
    Avif,
}

impl ImageKind {
    /// The type from the bytes' magic number (never from a client's claim); a GIF is not
    /// one the store keeps (compute writes GIF input as PNG).
    pub fn sniff(data: &[u8]) -> Option<Self> {
        match Format::sniff(data)? {
            Format::Jpeg => Some(ImageKind::Jpeg),
            Format::Png => Some(ImageKind::Png),
            Format::WebP => Some(ImageKind::Webp),
            Format::Avif => Some(ImageKind::Avif),
            Format::Gif => None,
        }
    }

    /// The extension ending its ids (`jpg`, `png`, `webp`, `avif`).
    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "jpg",
            ImageKind::Png => "png",
            ImageKind::Webp => "webp",
            ImageKind::Avif => "avif",
        }
    }

    fn from_extension(ext: &str) -> Option<Self> {
        match ext {
            "jpg" => Some(ImageKind::Jpeg),
            "png" => Some(ImageKind::Png),
            "webp" => Some(ImageKind::Webp),
            "avif" => Some(ImageKind::Avif),
            _ => None,
        }
    }

    /// The MIME type it is served with.
    pub fn content_type(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Png => "image/png",
            ImageKind::Webp => "image/webp",
            ImageKind::Avif => "image/avif",
        }
    }

    /// The name used in API answers (`"format": "webp"`), as in the form field.
    pub fn name(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "jpeg",
            ImageKind::Png => "png",
            ImageKind::Webp => "webp",
            ImageKind::Avif => "avif",
        }
    }
}

const HASH_HEX: usize = 64;

/// A valid object id. Only [`ObjectId::for_bytes`] and [`ObjectId::parse`] make one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectId {
    text: String,
    kind: ImageKind,
}

impl ObjectId {
    /// The id of `data`, an image of type `kind`.
    pub fn for_bytes(data: &[u8], kind: ImageKind) -> Self {
        let hash = hex::encode(Sha256::digest(data));
        ObjectId {
            text: format!("{hash}.{}", kind.extension()),
            kind,
        }
    }

    /// Parses an id exactly as written; `None` for anything that is not one.
    pub fn parse(text: &str) -> Option<Self> {
        // Longest valid id: 64 hex + "." + "webp". Checked first so that no work is done on
        // a long hostile string.
        if text.len() > HASH_HEX + 5 {
            return None;
        }
        let (hash, ext) = text.split_once('.')?;
        let hex_ok = hash.len() == HASH_HEX
            && hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok {
            return None;
        }
        let kind = ImageKind::from_extension(ext)?;
        Some(ObjectId {
            text: text.to_string(),
            kind,
        })
    }

    /// The id as written (`<sha256 hex>.<ext>`), also its name under the store's prefix.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The image type its extension names.
    pub fn kind(&self) -> ImageKind {
        self.kind
    }

    /// The hex SHA-256 of the content: a perfect strong validator.
    pub fn hash(&self) -> &str {
        &self.text[..HASH_HEX]
    }

    /// The strong ETag: the content hash, quoted.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.hash())
    }
}

impl std::fmt::Display for ObjectId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_name_the_content() {
        let id = ObjectId::for_bytes(b"hello", ImageKind::Webp);
        assert_eq!(
            id.as_str(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824.webp"
        );
        assert_eq!(ObjectId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(
            id.etag(),
            "\"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824\""
        );
        assert_eq!(id.kind().content_type(), "image/webp");
    }

    #[test]
    fn anything_else_is_not_an_id() {
        let hash = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        let hostile = [
            String::new(),
            "../etc/passwd".into(),
            "..%2fetc%2fpasswd".into(),
            hash.to_string(),
            format!("{hash}."),
            format!("{hash}.gif"),
            format!("{hash}.WEBP"),
            format!("{hash}.webp.png"),
            format!("{hash}.webp/"),
            format!("{}.webp", hash.to_uppercase()),
            format!("{}.webp", &hash[1..]),
            format!("{hash}0.webp"),
            format!("../{hash}.webp"),
            format!("{hash}.web\u{0}"),
            format!("{hash}.webp#1"),
            format!("{}.webp", "g".repeat(64)),
            "a".repeat(10_000),
        ];
        for text in hostile {
            assert_eq!(ObjectId::parse(&text), None, "{text:?}");
        }
    }

    #[test]
    fn types_are_sniffed_from_magic_bytes() {
        assert_eq!(ImageKind::sniff(b"\xFF\xD8\xFF\xE0"), Some(ImageKind::Jpeg));
        assert_eq!(
            ImageKind::sniff(b"\x89PNG\r\n\x1a\n...."),
            Some(ImageKind::Png)
        );
        assert_eq!(
            ImageKind::sniff(b"RIFF\0\0\0\0WEBPVP8 "),
            Some(ImageKind::Webp)
        );
        assert_eq!(ImageKind::sniff(b"GIF89a......"), None);
        assert_eq!(ImageKind::sniff(b""), None);
    }
}
