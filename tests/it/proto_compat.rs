//! Keeps the compute proto backward compatible: the compiled descriptor is rendered as one
//! line per enum value, field and method, and every line of the checked-in snapshot
//! (`proto/compute/compute.snapshot.txt`) must still be there. Adding is fine; removing,
//! renaming, renumbering or retyping fails. After an intended addition, refresh the snapshot
//! with `UPDATE_PROTO_SNAPSHOT=1 cargo test --test it proto_compat`.

use std::collections::BTreeSet;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::FileDescriptorSet;

const SNAPSHOT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/proto/compute/compute.snapshot.txt"
);

fn render(fds: &FileDescriptorSet) -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    for file in &fds.file {
        let package = file.package();
        for e in &file.enum_type {
            for v in &e.value {
                lines.insert(format!(
                    "enum {package}.{} {} = {}",
                    e.name(),
                    v.name(),
                    v.number()
                ));
            }
        }
        for m in &file.message_type {
            for f in &m.field {
                let ty = match f.r#type() {
                    Type::Message | Type::Enum => f.type_name().to_string(),
                    t => t.as_str_name().trim_start_matches("TYPE_").to_lowercase(),
                };
                let label = if f.label() == Label::Repeated {
                    "repeated"
                } else {
                    "single"
                };
                let oneof = f
                    .oneof_index
                    .map(|i| format!(" oneof {}", m.oneof_decl[i as usize].name()))
                    .unwrap_or_default();
                lines.insert(format!(
                    "field {package}.{} {} {} {ty} {label}{oneof}",
                    m.name(),
                    f.number(),
                    f.name()
                ));
            }
        }
        for s in &file.service {
            for m in &s.method {
                let stream = |yes: bool| if yes { "stream " } else { "" };
                lines.insert(format!(
                    "method {package}.{}/{} ({}{}) returns ({}{})",
                    s.name(),
                    m.name(),
                    stream(m.client_streaming()),
                    m.input_type(),
                    stream(m.server_streaming()),
                    m.output_type()
                ));
            }
        }
    }
    lines
}

#[test]
fn the_proto_only_ever_grows() {
    let fds = FileDescriptorSet::decode(imagegate::proto::FILE_DESCRIPTOR_SET).unwrap();
    let current = render(&fds);
    if std::env::var_os("UPDATE_PROTO_SNAPSHOT").is_some() {
        let text: String = current.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(SNAPSHOT, text).unwrap();
    }
    let snapshot = std::fs::read_to_string(SNAPSHOT).expect("checked-in snapshot");
    let missing: Vec<&str> = snapshot
        .lines()
        .filter(|l| !l.trim().is_empty() && !current.contains(*l))
        .collect();
    assert!(
        missing.is_empty(),
        "the proto lost or changed these (a breaking change for existing clients):\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn the_snapshot_pins_the_contract() {
    // Guards against an empty or truncated snapshot making the test above vacuous.
    let snapshot = std::fs::read_to_string(SNAPSHOT).unwrap();
    for line in [
        "field compute.CompressRequest 1 image_data bytes single",
        "field compute.WatermarkRequest 8 overlay_image bytes single",
        "field compute.Operation 3 watermark .compute.WatermarkOptions single oneof op",
        "field compute.BatchProcessRequest 1 images bytes repeated",
        "enum compute.Position CENTER = 5",
        "method compute.ImageService/BatchProcess (.compute.BatchProcessRequest) returns (stream .compute.ProcessChunk)",
        "method compute.HealthService/Check (.compute.HealthCheckRequest) returns (.compute.HealthCheckResponse)",
    ] {
        assert!(snapshot.lines().any(|l| l == line), "snapshot lacks {line:?}");
    }
}

#[test]
fn a_removed_or_renumbered_field_is_detected() {
    let mut fds = FileDescriptorSet::decode(imagegate::proto::FILE_DESCRIPTOR_SET).unwrap();
    let before = render(&fds);
    let message = fds.file[0]
        .message_type
        .iter_mut()
        .find(|m| m.name() == "ResizeRequest")
        .unwrap();
    message.field[1].number = Some(42);
    message.field.pop();
    let after = render(&fds);
    assert_eq!(before.difference(&after).count(), 2);
}
