//! Test payloads shared by the unit tests, `tests/it` and the benchmarks (which cannot import
//! each other): a photo-like image generator, PNG's CRC-32 for hand-made hostile files, and
//! ZIP / tar / gzip builders for archive tests.
//! Not part of the product's API.

/// A photo-like RGB image: gradients, a checkerboard of hard edges and noise of range `grain`
/// (24 is photo-like; less grain means fewer bytes per pixel once encoded). Deterministic.
pub fn photo(width: u32, height: u32, grain: u64) -> image::RgbImage {
    let grain = grain.max(1);
    let mut seed = 0x2545F4914F6CDD1Du64;
    image::RgbImage::from_fn(width, height, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let noise = (seed % grain) as i32 - (grain / 2) as i32;
        let base = [
            (x * 255 / width.max(1)) as i32,
            (y * 255 / height.max(1)) as i32,
            if (x / 40 + y / 40) % 2 == 0 { 60 } else { 190 },
        ];
        image::Rgb(base.map(|c| (c + noise).clamp(0, 255) as u8))
    })
}

/// CRC-32 (IEEE), as PNG chunks use.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A ZIP of `(name, data)` files, deflated.
pub fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in files {
        writer.start_file(*name, options).expect("zip entry");
        writer.write_all(data).expect("zip data");
    }
    writer.finish().expect("zip").into_inner()
}

/// A tar of `(name, data)` files. Names (up to 100 bytes) are written raw, unchecked, as a
/// hostile tool would (`../x`, `/abs`).
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, *data).expect("tar entry");
    }
    builder.into_inner().expect("tar")
}

/// `data` as one gzip stream.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
    }
}
