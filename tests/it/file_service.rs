//! FileService on the real compute server (127.0.0.1:0), called as a gRPC client would:
//! compression round trips, extraction of every archive flavour, the hostile archives each
//! reported by name. (Its place in reflection and `grpc.health.v1` is checked in `compute_grpc`.)

use std::io::{Cursor, Read, Write};

use crate::support::*;
use imagegate::proto::file_service_client::FileServiceClient;
use imagegate::proto::*;
use imagegate::testkit::{gzip, tar_of, zip_of};
use imagegate::vocab::errors::reason_of;
use tonic::transport::Channel;
use tonic::Code;

const MAX: usize = 64 * 1024 * 1024;

async fn client(compute: &Compute) -> FileServiceClient<Channel> {
    let channel = Channel::from_shared(compute.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    FileServiceClient::new(channel)
        .max_decoding_message_size(MAX)
        .max_encoding_message_size(MAX)
}

#[tokio::test]
async fn compress_round_trips_with_gzip_and_zstd() {
    let compute = start_compute(compute_config(), None);
    let mut c = client(&compute).await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 97) as u8).collect();
    for (codec, level, used) in [
        (Codec::Unspecified, 0, Codec::Zstd),
        (Codec::Zstd, 19, Codec::Zstd),
        (Codec::Gzip, 0, Codec::Gzip),
        (Codec::Gzip, 9, Codec::Gzip),
    ] {
        let r = c
            .compress(FileCompressRequest {
                data: data.clone().into(),
                codec: codec as i32,
                level,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.codec, used as i32, "{codec:?}");
        assert_eq!(r.original_size, data.len() as i64);
        assert_eq!(r.compressed_size, r.data.len() as i64);
        assert!(
            r.data.len() < data.len() / 20,
            "{codec:?}: {}",
            r.data.len()
        );
        let unpacked = match used {
            Codec::Gzip => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&r.data[..])
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
            _ => zstd::decode_all(&r.data[..]).unwrap(),
        };
        assert_eq!(unpacked, data, "{codec:?} {level}");
    }

    for (codec, level) in [(7, 0), (Codec::Gzip as i32, 10), (Codec::Zstd as i32, 99)] {
        let e = c
            .compress(FileCompressRequest {
                data: b"abc".to_vec().into(),
                codec,
                level,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{codec} {level}");
        assert_eq!(reason_of(&e).as_deref(), Some("BAD_PARAMETER"));
    }
}

#[tokio::test]
async fn extract_gives_the_regular_files_of_zip_and_tar_in_order() {
    let compute = start_compute(compute_config(), None);
    let mut c = client(&compute).await;
    let photo = jpeg(64, 48);
    let files: &[(&str, &[u8])] = &[("holiday/1.jpg", &photo), ("notes.txt", b"hello")];
    let tar = tar_of(files);
    for (kind, archive) in [
        ("zip", zip_of(files)),
        ("tar", tar.clone()),
        ("tar.gz", gzip(&tar)),
        ("tar.zst", zstd::encode_all(&tar[..], 3).unwrap()),
    ] {
        let r = c
            .extract(ExtractRequest {
                archive: archive.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"))
            .into_inner();
        let names: Vec<&str> = r.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["holiday/1.jpg", "notes.txt"], "{kind}");
        assert_eq!(&r.entries[0].data[..], &photo[..], "{kind}");
        assert_eq!(r.entries[0].size, photo.len() as i64, "{kind}");
    }
}

/// One hostile archive and what the server must answer: `Ok(names)` or `Err((code, reason))`.
type Expected = Result<Vec<&'static str>, (Code, &'static str)>;

#[tokio::test]
async fn hostile_archives_each_get_their_documented_answer() {
    let compute = start_compute(compute_config(), None);
    let mut c = client(&compute).await;
    let zeros = vec![0u8; 80 << 20];
    let tiny_names: Vec<String> = (0..10_000).map(|i| format!("f{i}.txt")).collect();
    let tiny: Vec<(&str, &[u8])> = tiny_names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let good_zip = zip_of(&[("a.jpg", b"data")]);
    let mut symlinked = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    symlinked
        .add_symlink("passwd", "/etc/passwd", options)
        .unwrap();
    symlinked.start_file("real.txt", options).unwrap();
    symlinked.write_all(b"real").unwrap();
    let symlinked = symlinked.finish().unwrap().into_inner();

    let limit = (Code::ResourceExhausted, "ARCHIVE_LIMIT");
    let undecodable = (Code::InvalidArgument, "UNDECODABLE_ARCHIVE");
    let cases: Vec<(&str, Vec<u8>, Expected)> = vec![
        (
            "zip bomb (80 MiB of zeros, ~1000x)",
            zip_of(&[("zeros.bin", &zeros)]),
            Err(limit),
        ),
        (
            "tar.gz bomb",
            gzip(&tar_of(&[("zeros.bin", &zeros)])),
            Err(limit),
        ),
        ("10k tiny entries (zip)", zip_of(&tiny), Err(limit)),
        ("10k tiny entries (tar)", tar_of(&tiny), Err(limit)),
        (
            "path traversal names",
            tar_of(&[("../../etc/cron.d/x", b"1"), ("/abs/y", b"2")]),
            Ok(vec!["etc/cron.d/x", "abs/y"]),
        ),
        (
            "an archive inside an archive",
            zip_of(&[("inner.zip", &good_zip)]),
            Ok(vec!["inner.zip"]),
        ),
        ("a symlink", symlinked, Ok(vec!["real.txt"])),
        (
            "truncated central directory",
            good_zip[..good_zip.len() - 8].to_vec(),
            Err(undecodable),
        ),
        ("not an archive", jpeg(8, 8), Err(undecodable)),
        ("empty", Vec::new(), Err(undecodable)),
    ];
    let mut wrong = Vec::new();
    for (name, archive, expected) in cases {
        let got = c
            .extract(ExtractRequest {
                archive: archive.into(),
            })
            .await;
        let ok = match (&got, &expected) {
            (Ok(r), Ok(names)) => {
                let got: Vec<&str> = r
                    .get_ref()
                    .entries
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect();
                &got == names
            }
            (Err(e), Err((code, reason))) => {
                e.code() == *code && reason_of(e).as_deref() == Some(*reason)
            }
            _ => false,
        };
        if !ok {
            let got = got.map(|r| {
                let entries = r.into_inner().entries;
                entries.into_iter().map(|e| e.name).collect::<Vec<_>>()
            });
            wrong.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "hostile archives answered wrongly:\n{}",
        wrong.join("\n")
    );
}
