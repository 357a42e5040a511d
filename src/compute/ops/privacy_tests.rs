//! Private metadata never reaches an output (CONTRACT §1 "Colour and metadata"): photos that
//! carry EXIF with GPS, XMP and IPTC, in each container they can arrive in, run through every
//! operation and every output format; no byte of the metadata comes out.

use super::testutil::*;
use super::*;

/// What the metadata says, so that a leak is found wherever it lands.
const CANARY: &[u8] = b"CANARY-48.85837N-2.29448E-home-of-alice";

/// A big-endian TIFF (EXIF body) with an ImageDescription holding the canary and a GPS IFD
/// (GPSLatitudeRef "N" and a GPSProcessingMethod holding the canary again).
fn tiff_with_gps() -> Vec<u8> {
    let mut t = b"MM\0\x2a\0\0\0\x08".to_vec();
    let ifd0_entries = 2u16;
    let ifd0_len = 2 + 12 * ifd0_entries as u32 + 4;
    let gps_ifd = 8 + ifd0_len;
    let gps_entries = 2u16;
    let gps_len = 2 + 12 * gps_entries as u32 + 4;
    let description = gps_ifd + gps_len;
    let method = description + CANARY.len() as u32;
    let entry = |t: &mut Vec<u8>, tag: u16, kind: u16, count: u32, value: u32| {
        t.extend_from_slice(&tag.to_be_bytes());
        t.extend_from_slice(&kind.to_be_bytes());
        t.extend_from_slice(&count.to_be_bytes());
        t.extend_from_slice(&value.to_be_bytes());
    };
    t.extend_from_slice(&ifd0_entries.to_be_bytes());
    entry(&mut t, 0x010E, 2, CANARY.len() as u32, description); // ImageDescription
    entry(&mut t, 0x8825, 4, 1, gps_ifd); // GPSInfo
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&gps_entries.to_be_bytes());
    entry(&mut t, 0x0001, 2, 2, u32::from_be_bytes(*b"N\0\0\0")); // GPSLatitudeRef
    entry(&mut t, 0x001B, 7, CANARY.len() as u32, method); // GPSProcessingMethod
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(CANARY);
    t.extend_from_slice(CANARY);
    t
}

fn xmp() -> Vec<u8> {
    let mut x = b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:Description exif:GPSLatitude='".to_vec();
    x.extend_from_slice(CANARY);
    x.extend_from_slice(b"'/></x:xmpmeta>");
    x
}

fn jpeg_segment(marker: u8, body: &[u8]) -> Vec<u8> {
    let mut s = vec![0xFF, marker];
    s.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    s.extend_from_slice(body);
    s
}

/// A JPEG with APP1 EXIF (GPS), APP1 XMP and APP13 IPTC, as phones and editors write them.
fn jpeg_with_metadata() -> Vec<u8> {
    let plain = jpeg_of(photo_like(128, 96, 7), 90);
    let mut exif = b"Exif\0\0".to_vec();
    exif.extend_from_slice(&tiff_with_gps());
    let mut xmp_body = b"http://ns.adobe.com/xap/1.0/\0".to_vec();
    xmp_body.extend_from_slice(&xmp());
    let mut iptc = b"Photoshop 3.0\08BIM\x04\x04\0\0".to_vec();
    iptc.extend_from_slice(&((CANARY.len() + 5) as u32).to_be_bytes());
    iptc.extend_from_slice(&[0x1C, 0x02, 0x5C]); // IPTC 2:92 (sub-location)
    iptc.extend_from_slice(&(CANARY.len() as u16).to_be_bytes());
    iptc.extend_from_slice(CANARY);
    let mut out = plain[..2].to_vec();
    out.extend(jpeg_segment(0xE1, &exif));
    out.extend(jpeg_segment(0xE1, &xmp_body));
    out.extend(jpeg_segment(0xED, &iptc));
    out.extend_from_slice(&plain[2..]);
    out
}

/// A PNG with an eXIf chunk (GPS) and an iTXt XMP packet, after IHDR.
fn png_with_metadata() -> Vec<u8> {
    let plain = png_of(image::DynamicImage::ImageRgb8(photo_like(96, 72, 3)));
    let after_ihdr = 8 + 8 + 13 + 4;
    let mut itxt = b"XML:com.adobe.xmp\0\0\0\0\0".to_vec();
    itxt.extend_from_slice(&xmp());
    let mut out = plain[..after_ihdr].to_vec();
    out.extend(png_chunk(b"eXIf", &tiff_with_gps()));
    out.extend(png_chunk(b"iTXt", &itxt));
    out.extend_from_slice(&plain[after_ihdr..]);
    out
}

/// An extended WebP (VP8X with the EXIF and XMP flags) carrying EXIF (GPS) and XMP chunks.
fn webp_with_metadata() -> Vec<u8> {
    let (w, h) = (96u32, 72u32);
    let plain = encode_as(
        image::DynamicImage::ImageRgb8(photo_like(w, h, 5)),
        Format::WebP,
        80,
    );
    assert_eq!(&plain[12..16], b"VP8 ", "a simple lossy WebP to extend");
    let mut vp8x = vec![0x08 | 0x04, 0, 0, 0];
    vp8x.extend_from_slice(&(w - 1).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(h - 1).to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    body.extend(riff_chunk(b"VP8X", &vp8x));
    body.extend_from_slice(&plain[12..]);
    body.extend(riff_chunk(b"EXIF", &tiff_with_gps()));
    body.extend(riff_chunk(b"XMP ", &xmp()));
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

fn leaks(output: &[u8]) -> Vec<&'static str> {
    let markers: [(&str, &[u8]); 7] = [
        ("the canary", CANARY),
        ("EXIF", b"Exif\0\0"),
        ("a TIFF/EXIF body", b"MM\0\x2a"),
        ("XMP", b"adobe:ns:meta"),
        ("a PNG eXIf chunk", b"eXIf"),
        ("IPTC", b"8BIM"),
        ("a WebP EXIF chunk", b"EXIF"),
    ];
    markers
        .iter()
        .filter(|(_, m)| output.windows(m.len()).any(|w| w == *m))
        .map(|(name, _)| *name)
        .collect()
}

#[test]
fn the_inputs_really_carry_the_metadata() {
    for (name, input) in [
        ("jpeg", jpeg_with_metadata()),
        ("png", png_with_metadata()),
        ("webp", webp_with_metadata()),
    ] {
        assert!(leaks(&input).contains(&"the canary"), "{name}");
        load(&input); // and still decode as images
    }
}

#[test]
fn no_operation_and_no_output_format_lets_metadata_through() {
    let limits = limits();
    let inputs = [
        ("jpeg", jpeg_with_metadata()),
        ("png", png_with_metadata()),
        ("webp", webp_with_metadata()),
    ];
    let formats = [
        OutputFormat::Keep,
        OutputFormat::Jpeg,
        OutputFormat::Png,
        OutputFormat::WebP,
        OutputFormat::Avif,
    ];
    let mut found = Vec::new();
    for (name, input) in &inputs {
        for out in formats {
            let results = [
                ("compress", compress(input, 80, out, &limits)),
                (
                    "resize",
                    resize(
                        input,
                        ResizeSpec {
                            width: 64,
                            height: 64,
                            keep_aspect: true,
                        },
                        out,
                        80,
                        &limits,
                    ),
                ),
                (
                    "watermark",
                    watermark(
                        input,
                        &WatermarkSpec {
                            mark: Mark::Text {
                                text: "© imagegate",
                                font_size: None,
                            },
                            position: Position::BottomRight,
                            opacity: 0.5,
                        },
                        out,
                        80,
                        &limits,
                    ),
                ),
            ];
            for (op, result) in results {
                let encoded = result.unwrap_or_else(|e| panic!("{name} {op} {out:?}: {e}"));
                let leaked = leaks(&encoded.data);
                if !leaked.is_empty() {
                    found.push(format!("{name} → {op} → {out:?}: {leaked:?}"));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "metadata reached outputs:\n{}",
        found.join("\n")
    );
}
