//! The size, rate and bitrate a published stream's video is held to.

/// What a publish pipeline's video is held to: the encoder's bitrate and the picture's
/// size and rate (adaptation lowers them on a thin link).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoRate {
    /// Encoder bitrate, kbit/s.
    pub kbps: u32,
    /// Picture width, pixels.
    pub width: u32,
    /// Picture height, pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
}

impl VideoRate {
    /// The raw video caps of this size and rate.
    pub fn caps(&self) -> String {
        format!("video/x-raw,width={},height={},framerate={}/1", self.width, self.height, self.fps)
    }
}

impl std::fmt::Display for VideoRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}@{} {} kbit/s", self.width, self.height, self.fps, self.kbps)
    }
}
