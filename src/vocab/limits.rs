//! Request limits the contract fixes and both sides check: the BFF refuses with 400 before a
//! byte is sent, compute refuses with INVALID_ARGUMENT whoever the caller is.

/// Largest side of a resize box (CONTRACT §1).
pub const MAX_BOX_SIDE: i32 = 16384;
/// Largest explicit watermark font size, in pixels.
pub const MAX_FONT_SIZE: i32 = 4096;
/// Longest watermark text, in characters.
pub const MAX_WATERMARK_TEXT_CHARS: usize = 1000;
