use std::io::{Cursor, Read, Write};

use super::*;
use crate::testkit::{tar_of, zip_of};

const LIMITS: ArchiveLimits = ArchiveLimits {
    max_entries: 1000,
    max_total_bytes: 64 << 20,
    max_expansion: 1000,
};

fn names(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.name.as_str()).collect()
}

#[test]
fn gzip_and_zstd_round_trip_at_every_kind_of_level() {
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for (codec, level) in [
        (Codec::Gzip, 0),
        (Codec::Gzip, 1),
        (Codec::Gzip, 9),
        (Codec::Zstd, 0),
        (Codec::Zstd, -3),
        (Codec::Zstd, 19),
    ] {
        let packed = compress(&data, codec, level).unwrap();
        assert!(packed.len() < data.len() / 10, "{codec:?} {level}");
        let mut unpacked = Vec::new();
        match codec {
            Codec::Gzip => {
                flate2::read::GzDecoder::new(&packed[..])
                    .read_to_end(&mut unpacked)
                    .unwrap();
            }
            Codec::Zstd => unpacked = zstd::decode_all(&packed[..]).unwrap(),
        }
        assert_eq!(unpacked, data, "{codec:?} {level}");
    }
    assert!(compress(b"", Codec::Zstd, 0).is_ok());
}

#[test]
fn levels_out_of_range_are_refused_not_clamped() {
    for (codec, level) in [(Codec::Gzip, 10), (Codec::Gzip, -1), (Codec::Zstd, 23)] {
        match compress(b"x", codec, level) {
            Err(FileError::BadParameter(why)) => assert!(why.contains("out of range"), "{why}"),
            other => panic!("{codec:?} {level}: {other:?}"),
        }
    }
}

#[test]
fn zip_and_every_tar_flavour_give_their_files_in_order() {
    let files: &[(&str, &[u8])] = &[("b.txt", b"second"), ("a/one.bin", b"first\0bytes")];
    let tar = tar_of(files);
    let archives = [
        ("zip", zip_of(files)),
        ("tar", tar.clone()),
        ("tar.gz", compress(&tar, Codec::Gzip, 0).unwrap()),
        ("tar.zst", compress(&tar, Codec::Zstd, 0).unwrap()),
    ];
    for (kind, archive) in archives {
        let entries = extract(&archive, &LIMITS).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(names(&entries), ["b.txt", "a/one.bin"], "{kind}");
        assert_eq!(entries[1].data, b"first\0bytes", "{kind}");
    }
}

#[test]
fn names_are_never_paths_out_of_the_archive() {
    let files: &[(&str, &[u8])] = &[
        ("../../etc/passwd", b"1"),
        ("/abs/root.txt", b"2"),
        ("C:\\windows\\x.txt", b"3"),
        ("ok/./../fine.txt", b"4"),
        ("..", b"5"),
    ];
    for (kind, archive) in [("zip", zip_of(files)), ("tar", tar_of(files))] {
        let entries = extract(&archive, &LIMITS).unwrap();
        assert_eq!(
            names(&entries),
            ["etc/passwd", "abs/root.txt", "windows/x.txt", "ok/fine.txt"],
            "{kind}"
        );
    }
}

#[test]
fn links_and_directories_are_skipped() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_size(0);
    builder.append_data(&mut dir, "photos/", &[][..]).unwrap();
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    builder
        .append_link(&mut link, "photos/passwd", "/etc/passwd")
        .unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_size(3);
    builder
        .append_data(&mut file, "photos/a.txt", &b"abc"[..])
        .unwrap();
    let tar = builder.into_inner().unwrap();
    assert_eq!(names(&extract(&tar, &LIMITS).unwrap()), ["photos/a.txt"]);

    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    writer.add_directory("photos/", options).unwrap();
    writer
        .add_symlink("photos/passwd", "/etc/passwd", options)
        .unwrap();
    writer.start_file("photos/a.txt", options).unwrap();
    writer.write_all(b"abc").unwrap();
    let zip = writer.finish().unwrap().into_inner();
    assert_eq!(names(&extract(&zip, &LIMITS).unwrap()), ["photos/a.txt"]);
}

#[test]
fn an_archive_inside_an_archive_is_one_file_not_opened() {
    let inner = zip_of(&[("deep.txt", b"x")]);
    let outer = zip_of(&[("inner.zip", &inner)]);
    let entries = extract(&outer, &LIMITS).unwrap();
    assert_eq!(names(&entries), ["inner.zip"]);
    assert_eq!(entries[0].data, inner);
}

#[test]
fn bombs_are_stopped_while_unpacking() {
    let zeros = vec![0u8; 8 << 20];
    let limits = ArchiveLimits {
        max_expansion: 100,
        ..LIMITS
    };
    // One deflated entry of 8 MiB of zeros: ~1000x.
    match extract(&zip_of(&[("zeros.bin", &zeros)]), &limits) {
        Err(FileError::Limit(why)) => assert!(why.contains("100x"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The same as a .tar.gz and a .tar.zst: the stream is judged as it flows.
    let tar = tar_of(&[("zeros.bin", &zeros)]);
    for codec in [Codec::Gzip, Codec::Zstd] {
        match extract(&compress(&tar, codec, 0).unwrap(), &limits) {
            Err(FileError::Limit(why)) => assert!(why.contains("archive bomb"), "{why}"),
            other => panic!("{codec:?}: {other:?}"),
        }
    }
}

#[test]
fn the_total_is_capped_at_what_one_answer_carries() {
    let limits = ArchiveLimits {
        max_total_bytes: 100_000,
        ..LIMITS
    };
    let chunk: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let files: &[(&str, &[u8])] = &[("1", &chunk), ("2", &chunk), ("3", &chunk)];
    for archive in [zip_of(files), tar_of(files)] {
        match extract(&archive, &limits) {
            Err(FileError::Limit(why)) => assert!(why.contains("100000 bytes"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn ten_thousand_tiny_entries_are_refused() {
    let names: Vec<String> = (0..10_000).map(|i| format!("f{i}")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    for archive in [zip_of(&files), tar_of(&files)] {
        match extract(&archive, &LIMITS) {
            Err(FileError::Limit(why)) => assert!(why.contains("1000"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn broken_archives_are_undecodable() {
    let zip = zip_of(&[("a.txt", b"hello")]);
    let truncated_directory = &zip[..zip.len() - 10];
    let tar = tar_of(&[("a.txt", &[7u8; 4000])]);
    let truncated_tar = &tar[..1200];
    let mut bad_checksum = tar.clone();
    bad_checksum[148] ^= 0x11;
    let lone_gzip = compress(b"not a tar at all, just text", Codec::Gzip, 0).unwrap();
    for (what, data) in [
        ("truncated central directory", truncated_directory),
        ("truncated tar", truncated_tar),
        ("tar header checksum", &bad_checksum[..]),
        ("a gzip of text", &lone_gzip[..]),
        ("not an archive", &b"just some bytes"[..]),
        ("empty", &b""[..]),
    ] {
        match extract(data, &LIMITS) {
            Err(FileError::Undecodable(_)) => {}
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn clean_names_keep_what_is_safe() {
    assert_eq!(clean_name("a/b.jpg").as_deref(), Some("a/b.jpg"));
    assert_eq!(clean_name("./a//b.jpg").as_deref(), Some("a/b.jpg"));
    assert_eq!(clean_name("a\u{0}b").as_deref(), Some("a_b"));
    assert_eq!(clean_name("/../"), None);
}
