//! `imagegate op …`: run one image operation on a file, outside any server (for users and for
//! `make bench-ops`).
//!
//! ```text
//! imagegate op compress  IN -o OUT [--format jpeg|png|webp] [--quality N]
//! imagegate op resize    IN -o OUT --width W --height H [--exact] [--format …] [--quality N]
//! imagegate op watermark IN -o OUT (--text T | --overlay FILE) [--position P] [--opacity A]
//!                                  [--font-size PX] [--format …] [--quality N]
//! ```
//! Every subcommand also takes `--max-pixels N`. Without `--format`, the output file's
//! extension picks the format when it is .jpg/.jpeg/.png/.webp; otherwise the input's format
//! is kept (GIF becomes PNG).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use super::{Limits, Mark, OutputFormat, Position, ResizeSpec, WatermarkSpec};

/// Arguments of `imagegate op`.
#[derive(Debug, clap::Args)]
pub struct OpArgs {
    /// The operation and its arguments.
    #[command(subcommand)]
    pub command: OpCommand,
}

/// The operation to run.
#[derive(Debug, clap::Subcommand)]
pub enum OpCommand {
    /// Re-encode at a quality, optionally in another format.
    Compress {
        /// Input, output, format and quality.
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Resize: fit inside WIDTH×HEIGHT (either may be 0), or exactly with --exact.
    Resize {
        /// Input, output, format and quality.
        #[command(flatten)]
        common: CommonArgs,
        /// Box width in pixels (0 = derived from the height).
        #[arg(long, default_value_t = 0)]
        width: u32,
        /// Box height in pixels (0 = derived from the width).
        #[arg(long, default_value_t = 0)]
        height: u32,
        /// Resize to exactly WIDTH×HEIGHT instead of fitting inside the box.
        #[arg(long)]
        exact: bool,
    },
    /// Draw a text or logo watermark.
    Watermark {
        /// Input, output, format and quality.
        #[command(flatten)]
        common: CommonArgs,
        /// Watermark text.
        #[arg(long, conflicts_with = "overlay", required_unless_present = "overlay")]
        text: Option<String>,
        /// PNG or WebP logo to composite instead of text.
        #[arg(long)]
        overlay: Option<PathBuf>,
        /// Where the watermark goes.
        #[arg(long, value_enum, default_value_t = PositionArg::BottomRight)]
        position: PositionArg,
        /// Opacity in (0, 1].
        #[arg(long, default_value_t = 0.5)]
        opacity: f32,
        /// Font size in pixels (default: about 5% of the shorter side).
        #[arg(long)]
        font_size: Option<u32>,
    },
}

/// Arguments every operation takes.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// Input image (JPEG, PNG, WebP or GIF).
    pub input: PathBuf,
    /// Output file.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Output format (default: from the output's extension, else the input's).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Quality 1–100 (JPEG and WebP).
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: u8,
    /// Largest decoded or produced image, in pixels.
    #[arg(long, default_value_t = 50_000_000)]
    pub max_pixels: u64,
    /// AVIF encoder speed, 1 (slowest, smallest) to 10 (fastest): `compute.avif_speed`.
    #[arg(long, default_value_t = super::DEFAULT_AVIF_SPEED, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub avif_speed: u8,
}

/// An output format as `--format` spells it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    /// JPEG (also spelled jpg).
    #[value(alias = "jpg")]
    Jpeg,
    /// PNG.
    Png,
    /// WebP.
    Webp,
    /// AVIF.
    Avif,
}

/// A watermark position as `--position` spells it (`bottom-right`, ...).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PositionArg {
    /// Bottom-right corner.
    BottomRight,
    /// Bottom-left corner.
    BottomLeft,
    /// Top-right corner.
    TopRight,
    /// Top-left corner.
    TopLeft,
    /// Centred.
    Center,
}

impl From<PositionArg> for Position {
    fn from(p: PositionArg) -> Self {
        match p {
            PositionArg::BottomRight => Position::BottomRight,
            PositionArg::BottomLeft => Position::BottomLeft,
            PositionArg::TopRight => Position::TopRight,
            PositionArg::TopLeft => Position::TopLeft,
            PositionArg::Center => Position::Center,
        }
    }
}

fn output_format(format: Option<FormatArg>, output: &Path) -> OutputFormat {
    match format {
        Some(FormatArg::Jpeg) => OutputFormat::Jpeg,
        Some(FormatArg::Png) => OutputFormat::Png,
        Some(FormatArg::Webp) => OutputFormat::WebP,
        Some(FormatArg::Avif) => OutputFormat::Avif,
        None => {
            let ext = output
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            match ext.as_deref() {
                Some("jpg" | "jpeg") => OutputFormat::Jpeg,
                Some("png") => OutputFormat::Png,
                Some("webp") => OutputFormat::WebP,
                Some("avif") => OutputFormat::Avif,
                _ => OutputFormat::Keep,
            }
        }
    }
}

/// Run the operation and write the output file.
pub fn run(args: OpArgs) -> anyhow::Result<()> {
    let common = match &args.command {
        OpCommand::Compress { common }
        | OpCommand::Resize { common, .. }
        | OpCommand::Watermark { common, .. } => common,
    };
    let input = std::fs::read(&common.input)
        .with_context(|| format!("reading {}", common.input.display()))?;
    let out = output_format(common.format, &common.output);
    let limits = Limits {
        max_pixels: common.max_pixels,
        avif_speed: common.avif_speed,
    };
    let quality = common.quality;

    let started = Instant::now();
    let result = match &args.command {
        OpCommand::Compress { .. } => super::compress(&input, quality, out, &limits),
        OpCommand::Resize {
            width,
            height,
            exact,
            ..
        } => {
            let spec = ResizeSpec {
                width: *width,
                height: *height,
                keep_aspect: !exact,
            };
            super::resize(&input, spec, out, quality, &limits)
        }
        OpCommand::Watermark {
            text,
            overlay,
            position,
            opacity,
            font_size,
            ..
        } => {
            let overlay_bytes = match overlay {
                Some(path) => Some(
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
                ),
                None => None,
            };
            let mark = match (text, &overlay_bytes) {
                (_, Some(bytes)) => Mark::Overlay(bytes),
                (Some(text), None) => Mark::Text {
                    text,
                    font_size: *font_size,
                },
                (None, None) => anyhow::bail!("give --text or --overlay"),
            };
            let spec = WatermarkSpec {
                mark,
                position: (*position).into(),
                opacity: *opacity,
            };
            super::watermark(&input, &spec, out, quality, &limits)
        }
    };
    let elapsed = started.elapsed();
    let encoded = result.with_context(|| format!("processing {}", common.input.display()))?;
    std::fs::write(&common.output, &encoded.data)
        .with_context(|| format!("writing {}", common.output.display()))?;
    println!(
        "{} {} bytes {}x{} {:.1} ms",
        encoded.format.name(),
        encoded.data.len(),
        encoded.width,
        encoded.height,
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(())
}
