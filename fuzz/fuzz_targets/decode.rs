//! The compute engine's decode path (src/compute/ops/decode.rs): sniff, the header pixel
//! limit, decode (JPEG through mozjpeg with shrink-on-load, still WebP through libwebp, PNG /
//! GIF / animated WebP through `image`), EXIF orientation. Arbitrary bytes give an image within
//! the pixel limit in one of the two pipeline layouts, or an error; never a panic.
//!
//! The limit is small (4 MP) so that bombs are cut off early and the fuzzer stays fast. When
//! the input's last byte is odd, a resize box taken from the bytes before it is passed as well
//! (shrink-on-load and the produced-pixel limit); the bytes stay part of the image, as trailing
//! bytes a real upload could have.
#![no_main]

use imagegate::compute::ops::{sniff, Limits, OpError, ResizeSpec};
use imagegate::fuzzing::decode;
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    avif_speed: imagegate::compute::ops::DEFAULT_AVIF_SPEED,
    max_pixels: 4_000_000,
};

fn resize_box(data: &[u8]) -> Option<ResizeSpec> {
    let n = data.len();
    if n < 4 || data[n - 1] & 1 == 0 {
        return None;
    }
    Some(ResizeSpec {
        width: u32::from(u16::from_le_bytes([data[n - 3], data[n - 2]])) % 5000,
        height: u32::from(data[n - 4]) * 8,
        keep_aspect: data[n - 1] & 2 == 0,
    })
}

fuzz_target!(|data: &[u8]| {
    let spec = resize_box(data);
    match decode(data, &LIMITS, spec.as_ref()) {
        Ok(d) => {
            assert_eq!(Some(d.format), sniff(data));
            let full = u64::from(d.full_width) * u64::from(d.full_height);
            assert!(full > 0 && full <= LIMITS.max_pixels, "{d:?}");
            assert!(d.width > 0 && d.height > 0, "{d:?}");
            assert!(d.channels == 3 || d.channels == 4, "{d:?}");
            assert_eq!(
                d.buffer_len,
                d.width as usize * d.height as usize * usize::from(d.channels),
                "{d:?}"
            );
            if spec.is_some() {
                // Shrink-on-load only ever makes the buffer smaller.
                assert!(
                    d.width <= d.full_width && d.height <= d.full_height,
                    "{d:?}"
                );
            } else {
                assert_eq!((d.width, d.height), (d.full_width, d.full_height), "{d:?}");
            }
        }
        Err(OpError::BadParameter(m)) => {
            assert!(spec.is_some(), "BadParameter without a resize box: {m}");
        }
        Err(OpError::UnsupportedFormat(m)) => {
            assert!(sniff(data).is_none(), "{m}");
        }
        Err(OpError::Undecodable(m) | OpError::PixelLimit(m)) => {
            assert!(!m.is_empty());
        }
    }
});
