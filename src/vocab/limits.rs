//! Request limits the contract fixes and both sides check: the BFF refuses with 400 before a
//! byte is sent, compute refuses with INVALID_ARGUMENT whoever the caller is. Also the HTTP/2
//! frame size both sides of the gRPC hop accept.

/// Largest side of a resize box (CONTRACT §1).
pub const MAX_BOX_SIDE: i32 = 16384;
/// Largest explicit watermark font size, in pixels.
pub const MAX_FONT_SIZE: i32 = 4096;
/// Longest watermark text, in characters.
pub const MAX_WATERMARK_TEXT_CHARS: usize = 1000;

/// Largest HTTP/2 frame the BFF and compute accept from each other (HTTP/2's default is
/// 16 KiB). h2 writes each DATA frame with its own `writev`, so a 2 MB upload in 16 KiB frames
/// costs 128 system calls on each side; in 1 MiB frames, two or three. The realtime lane's
/// small messages are unaffected, and each lane has its own connections, so a large frame
/// never sits in front of a health check.
pub const H2_MAX_FRAME_SIZE: u32 = 1 << 20;
