//! H.264 encoder choice. The chain, best first: the Raspberry Pi's V4L2 M2M encoder
//! (`v4l2h264enc`, Pi 4 and earlier), the Jetson's (`nvv4l2h264enc`), VA-API
//! (`vaapih264enc`, Intel boards), then software: `x264enc` and `openh264enc` (the Pi 5 and
//! Orin Nano have no H.264 encoder). Every choice outputs constrained baseline with SPS/PPS
//! before every IDR, so a player that joins late decodes from the next keyframe.

use std::fmt;

/// One H.264 encoder callbox knows how to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoder {
    /// Raspberry Pi (4 and earlier) V4L2 M2M hardware encoder.
    V4l2,
    /// NVIDIA Jetson hardware encoder.
    Nvidia,
    /// VA-API hardware encoder (Intel).
    Vaapi,
    /// x264 software encoder.
    X264,
    /// OpenH264 software encoder.
    OpenH264,
}

/// The fallback order.
pub const CHAIN: [Encoder; 5] = [Encoder::V4l2, Encoder::Nvidia, Encoder::Vaapi, Encoder::X264, Encoder::OpenH264];

impl Encoder {
    /// The GStreamer element name.
    pub fn element(self) -> &'static str {
        match self {
            Encoder::V4l2 => "v4l2h264enc",
            Encoder::Nvidia => "nvv4l2h264enc",
            Encoder::Vaapi => "vaapih264enc",
            Encoder::X264 => "x264enc",
            Encoder::OpenH264 => "openh264enc",
        }
    }

    /// Parses an element name (config `video.encoder`).
    pub fn from_element(name: &str) -> Option<Encoder> {
        CHAIN.into_iter().find(|e| e.element() == name)
    }

    /// A hardware encoder.
    pub fn is_hardware(self) -> bool {
        matches!(self, Encoder::V4l2 | Encoder::Nvidia | Encoder::Vaapi)
    }

    /// The pipeline fragment from raw video (any format videoconvert offers) to H.264
    /// constrained baseline byte-stream, access-unit aligned. The encoder is named `venc`.
    pub fn description(self, bitrate_kbps: u32, fps: u32) -> String {
        let gop = (fps * 2).max(1);
        let bps = bitrate_kbps * 1000;
        let out = "video/x-h264,stream-format=byte-stream,alignment=au,profile=constrained-baseline";
        match self {
            Encoder::V4l2 => format!(
                "videoconvert ! video/x-raw,format=I420 ! v4l2h264enc name=venc \
                 extra-controls=\"controls,repeat_sequence_header=1,video_bitrate={bps},h264_i_frame_period={gop}\" ! \
                 video/x-h264,level=(string)4,profile=(string)constrained-baseline ! h264parse config-interval=-1 ! {out}"
            ),
            Encoder::Nvidia => format!(
                "nvvidconv ! video/x-raw(memory:NVMM),format=NV12 ! nvv4l2h264enc name=venc insert-sps-pps=true \
                 idrinterval={gop} iframeinterval={gop} bitrate={bps} maxperf-enable=true preset-level=1 profile=0 ! \
                 h264parse config-interval=-1 ! {out}"
            ),
            Encoder::Vaapi => format!(
                "videoconvert ! vaapih264enc name=venc rate-control=cbr bitrate={bitrate_kbps} keyframe-period={gop} ! \
                 h264parse config-interval=-1 ! {out}"
            ),
            Encoder::X264 => format!(
                "videoconvert ! x264enc name=venc tune=zerolatency speed-preset=ultrafast bitrate={bitrate_kbps} \
                 key-int-max={gop} byte-stream=true ! {out} ! h264parse config-interval=-1 ! {out}"
            ),
            Encoder::OpenH264 => format!(
                "videoconvert ! video/x-raw,format=I420 ! openh264enc name=venc bitrate={bps} rate-control=bitrate \
                 gop-size={gop} complexity=low ! h264parse config-interval=-1 ! {out}"
            ),
        }
    }
}

/// How a running encoder takes a new bitrate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BitrateControl {
    /// Set this property of `venc` to this value.
    Property(&'static str, u32),
    /// Set `venc`'s `extra-controls` to this structure: the Pi's V4L2 encoder takes a
    /// bitrate only through its own controls (one set from another process is ignored).
    ExtraControls(String),
}

impl Encoder {
    /// The way to give this encoder `kbps` while it runs: `x264enc` and `vaapih264enc`
    /// take kbit/s, `openh264enc` and `nvv4l2h264enc` bit/s, `v4l2h264enc` the V4L2
    /// control `video_bitrate` (bit/s). The hardware ones are untested on hardware.
    pub fn bitrate_control(self, kbps: u32) -> BitrateControl {
        let bps = kbps.saturating_mul(1000);
        match self {
            Encoder::X264 | Encoder::Vaapi => BitrateControl::Property("bitrate", kbps),
            Encoder::OpenH264 | Encoder::Nvidia => BitrateControl::Property("bitrate", bps),
            Encoder::V4l2 => BitrateControl::ExtraControls(format!("controls,video_bitrate={bps}")),
        }
    }
}

impl fmt::Display for Encoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.element())
    }
}

/// The encoder chosen and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The encoder.
    pub encoder: Encoder,
    /// Why it was chosen, for the log and `doctor`.
    pub reason: String,
}

/// Chooses the encoder: the configured one if it is present, else the first of the chain
/// (after `skip`, the encoders that already failed) that `present` says exists.
pub fn choose(configured: Option<Encoder>, skip: &[Encoder], present: impl Fn(&str) -> bool) -> Option<Choice> {
    if let Some(e) = configured.filter(|e| !skip.contains(e)) {
        if present(e.element()) {
            return Some(Choice { encoder: e, reason: "set in the configuration".into() });
        }
        tracing::warn!(encoder = %e, "the configured encoder is not available; choosing from the chain");
    }
    let mut missing = Vec::new();
    for e in CHAIN {
        if skip.contains(&e) {
            continue;
        }
        if present(e.element()) {
            let why = if e.is_hardware() { "hardware encoder present" } else { "software fallback" };
            let reason = if missing.is_empty() {
                why.to_string()
            } else {
                format!("{why}; not present: {}", missing.join(", "))
            };
            let reason = if skip.is_empty() {
                reason
            } else {
                let failed: Vec<&str> = skip.iter().map(|e| e.element()).collect();
                format!("{reason}; failed before: {}", failed.join(", "))
            };
            return Some(Choice { encoder: e, reason });
        }
        missing.push(e.element());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_encoder_takes_a_new_bitrate_in_its_own_unit() {
        assert_eq!(Encoder::X264.bitrate_control(450), BitrateControl::Property("bitrate", 450));
        assert_eq!(Encoder::Vaapi.bitrate_control(450), BitrateControl::Property("bitrate", 450));
        assert_eq!(Encoder::OpenH264.bitrate_control(450), BitrateControl::Property("bitrate", 450_000));
        assert_eq!(Encoder::Nvidia.bitrate_control(450), BitrateControl::Property("bitrate", 450_000));
        assert_eq!(
            Encoder::V4l2.bitrate_control(450),
            BitrateControl::ExtraControls("controls,video_bitrate=450000".into())
        );
    }

    #[test]
    fn chain_prefers_hardware_and_skips_what_failed() {
        let pi = |n: &str| matches!(n, "v4l2h264enc" | "x264enc" | "openh264enc");
        let c = choose(None, &[], pi).unwrap();
        assert_eq!(c.encoder, Encoder::V4l2);
        assert_eq!(c.reason, "hardware encoder present");
        let c = choose(None, &[Encoder::V4l2], pi).unwrap();
        assert_eq!(c.encoder, Encoder::X264);
        assert!(c.reason.contains("failed before: v4l2h264enc"), "{}", c.reason);
        let jetson = |n: &str| matches!(n, "nvv4l2h264enc" | "x264enc");
        assert_eq!(choose(None, &[], jetson).unwrap().encoder, Encoder::Nvidia);
        let pi5 = |n: &str| n == "openh264enc";
        let c = choose(None, &[], pi5).unwrap();
        assert_eq!(c.encoder, Encoder::OpenH264);
        assert!(c.reason.contains("not present: v4l2h264enc, nvv4l2h264enc, vaapih264enc, x264enc"));
        assert!(choose(None, &[], |_| false).is_none());
    }

    #[test]
    fn configured_encoder_wins_when_present() {
        let all = |_: &str| true;
        let c = choose(Some(Encoder::OpenH264), &[], all).unwrap();
        assert_eq!((c.encoder, c.reason.as_str()), (Encoder::OpenH264, "set in the configuration"));
        let no_vaapi = |n: &str| n != "vaapih264enc";
        assert_eq!(choose(Some(Encoder::Vaapi), &[], no_vaapi).unwrap().encoder, Encoder::V4l2);
    }

    #[test]
    fn hardware_descriptions_carry_the_board_settings() {
        let pi = Encoder::V4l2.description(1500, 30);
        assert!(pi.contains("repeat_sequence_header=1"), "{pi}");
        assert!(pi.contains("video_bitrate=1500000"));
        assert!(pi.contains("level=(string)4"));
        let nv = Encoder::Nvidia.description(2000, 30);
        for needle in ["insert-sps-pps=true", "idrinterval=60", "maxperf-enable=true", "bitrate=2000000", "memory:NVMM"]
        {
            assert!(nv.contains(needle), "{needle} missing in {nv}");
        }
        for e in CHAIN {
            let d = e.description(800, 15);
            assert!(d.contains("name=venc"), "{d}");
            assert!(d.contains("profile=constrained-baseline"), "{d}");
            assert!(d.contains("config-interval=-1"), "SPS/PPS before every IDR: {d}");
        }
        assert!(Encoder::X264.description(800, 15).contains("tune=zerolatency speed-preset=ultrafast"));
        assert_eq!(Encoder::from_element("x264enc"), Some(Encoder::X264));
        assert_eq!(Encoder::from_element("nope"), None);
    }
}
