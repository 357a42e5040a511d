//! Test payloads shared by the unit tests, `tests/it` and the benchmarks (which cannot import
//! each other): a photo-like image generator and PNG's CRC-32 for hand-made hostile files.
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

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
    }
}
