//! Colour management: an image that embeds an ICC profile (JPEG APP2, PNG iCCP, WebP ICCP) is
//! converted to sRGB right after decoding, with moxcms, so every later step (resize,
//! watermark colours, every encoder) works in the one space that untagged web images mean.
//!
//! Why convert rather than keep the profile: outputs then need no profile at all (an sRGB image
//! is what a browser assumes without one, and ~0.5–3 KB less per thumbnail); the AVIF, WebP and
//! JPEG writers would each need their own way to embed it; and resizing and compositing are
//! only right when all inputs share one space. The cost is that colours outside sRGB (the most
//! saturated Display-P3 reds and greens) are clipped to its edge, as libvips' `thumbnail` and
//! imgproxy do by default. A profile that does not parse, or that does not describe RGB pixels,
//! is ignored (the pixels are taken as sRGB): a broken tag never fails an image.

use image::DynamicImage;
use moxcms::{ColorProfile, DataColorSpace, Layout, TransformOptions};

/// The ICC profile of a JPEG, from its APP2 `ICC_PROFILE` markers (a profile may be split over
/// several, numbered from 1).
pub(crate) fn jpeg_icc<'a>(app2: impl Iterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    const TAG: &[u8] = b"ICC_PROFILE\0";
    let mut chunks: Vec<(u8, &[u8])> = app2
        .filter(|data| data.len() > TAG.len() + 2 && data.starts_with(TAG))
        .map(|data| (data[TAG.len()], &data[TAG.len() + 2..]))
        .collect();
    if chunks.is_empty() {
        return None;
    }
    chunks.sort_by_key(|(sequence, _)| *sequence);
    Some(
        chunks
            .into_iter()
            .flat_map(|(_, data)| data.iter().copied())
            .collect(),
    )
}

/// CMYK pixels (4 bytes each, as libjpeg hands them over; `inverted` for Adobe JPEGs, which
/// store 255 − ink) converted to sRGB through their embedded CMYK profile: a press profile
/// describes what each ink mix looks like, which no formula does. `None` when `icc` is not a
/// usable CMYK profile (the caller then falls back to the naive formula).
pub(crate) fn cmyk_to_srgb(cmyk: &[u8], inverted: bool, icc: &[u8]) -> Option<Vec<u8>> {
    let source = ColorProfile::new_from_slice(icc).ok()?;
    if source.color_space != DataColorSpace::Cmyk {
        return None;
    }
    let transform = source
        .create_transform_8bit(
            Layout::Rgba,
            &ColorProfile::new_srgb(),
            Layout::Rgb,
            TransformOptions::default(),
        )
        .inspect_err(|e| tracing::debug!("no transform from an embedded CMYK profile: {e:?}"))
        .ok()?;
    // ICC CMYK values are ink amounts (0 = none).
    let ink: Vec<u8> = if inverted {
        cmyk.iter().map(|v| 255 - v).collect()
    } else {
        cmyk.to_vec()
    };
    let mut rgb = vec![0u8; cmyk.len() / 4 * 3];
    transform.transform(&ink, &mut rgb).ok()?;
    Some(rgb)
}

/// `image` (8-bit RGB or RGBA) converted from the space `icc` describes to sRGB. Unchanged
/// without a profile, or with one that is unusable for RGB pixels.
pub(crate) fn to_srgb(image: DynamicImage, icc: Option<&[u8]>) -> DynamicImage {
    let Some(icc) = icc else {
        return image;
    };
    let Ok(source) = ColorProfile::new_from_slice(icc) else {
        tracing::debug!("an embedded ICC profile does not parse: taken as sRGB");
        return image;
    };
    if source.color_space != DataColorSpace::Rgb {
        return image;
    }
    let layout = match &image {
        DynamicImage::ImageRgb8(_) => Layout::Rgb,
        DynamicImage::ImageRgba8(_) => Layout::Rgba,
        _ => return image,
    };
    let srgb = ColorProfile::new_srgb();
    let Ok(transform) =
        source.create_transform_8bit(layout, &srgb, layout, TransformOptions::default())
    else {
        tracing::debug!("no transform from an embedded ICC profile to sRGB: taken as sRGB");
        return image;
    };
    let (width, height) = (image.width(), image.height());
    let pixels = image.as_bytes();
    let mut out = vec![0u8; pixels.len()];
    if transform.transform(pixels, &mut out).is_err() {
        return image;
    }
    match layout {
        Layout::Rgb => image::RgbImage::from_raw(width, height, out).map(DynamicImage::ImageRgb8),
        _ => image::RgbaImage::from_raw(width, height, out).map(DynamicImage::ImageRgba8),
    }
    .unwrap_or(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_split_over_app2_markers_is_joined_in_order() {
        let second = b"ICC_PROFILE\0\x02\x02world".to_vec();
        let first = b"ICC_PROFILE\0\x01\x02hello ".to_vec();
        let other = b"something else".to_vec();
        let markers = [&second[..], &other[..], &first[..]];
        assert_eq!(
            jpeg_icc(markers.into_iter()).as_deref(),
            Some(&b"hello world"[..])
        );
        assert_eq!(jpeg_icc([&other[..]].into_iter()), None);
    }

    #[test]
    fn a_broken_or_absent_profile_changes_nothing() {
        let image =
            DynamicImage::ImageRgb8(image::RgbImage::from_pixel(4, 4, image::Rgb([10, 200, 30])));
        for icc in [None, Some(&b"not a profile"[..])] {
            assert_eq!(to_srgb(image.clone(), icc).as_bytes(), image.as_bytes());
        }
    }
}
