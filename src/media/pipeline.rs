//! Pipeline descriptions (`gst-launch` syntax) for publishing and playing, per source,
//! encoder and sink. Named elements the code relies on: `vcaps` (raw video, counted as
//! captured), `venc` (encoder, counted as encoded), `vsink`/`asink` (RTP out), `vsrc`/`asrc`
//! (RTP in), `vdec` (decoded), `vout` (rendered), `adec` (audio decoded).

use super::encoder::Encoder;
use super::{AudioSink, AudioSource, MediaConfig, VideoSink, VideoSource};
use crate::rtc::{H264_PT, OPUS_PT};

/// RTP packets are kept under this size (fits any path MTU with SRTP and IP headers).
pub const RTP_MTU: u32 = 1200;

/// The publish pipeline: source, encoder, payloader, appsinks `vsink` and `asink`.
/// `overlay`: draw a clock on the test pattern (needs the pango plugin).
pub fn publish(cfg: &MediaConfig, encoder: Encoder, overlay: bool) -> String {
    let (w, h, fps) = (cfg.width, cfg.height, cfg.fps);
    let raw = format!("video/x-raw,width={w},height={h},framerate={fps}/1");
    let source = match &cfg.video {
        VideoSource::Test => {
            let clock = if overlay { " ! timeoverlay halignment=right valignment=bottom" } else { "" };
            let pattern = &cfg.test_pattern;
            format!("videotestsrc is-live=true pattern={pattern} ! {raw} ! capsfilter name=vcaps{clock}")
        }
        VideoSource::V4l2 { device, mjpeg: true } => format!(
            "v4l2src device={device} ! image/jpeg,width={w},height={h},framerate={fps}/1 ! jpegdec ! \
             videoconvert ! videoscale ! videorate ! {raw} ! capsfilter name=vcaps"
        ),
        VideoSource::V4l2 { device, mjpeg: false } => {
            format!("v4l2src device={device} ! videoconvert ! videoscale ! videorate ! {raw} ! capsfilter name=vcaps")
        }
        VideoSource::Libcamera => {
            format!("libcamerasrc ! videoconvert ! videoscale ! videorate ! {raw} ! capsfilter name=vcaps")
        }
    };
    let video = format!(
        "{source} ! queue max-size-buffers=2 leaky=downstream ! {enc} ! \
         rtph264pay pt={H264_PT} mtu={RTP_MTU} config-interval=-1 aggregate-mode=zero-latency ! \
         appsink name=vsink sync=false max-buffers=256 drop=true",
        enc = encoder.description(cfg.bitrate_kbps, fps)
    );
    let mic = match &cfg.audio {
        AudioSource::Test => "audiotestsrc is-live=true wave=sine freq=440 volume=0.1".to_string(),
        AudioSource::Alsa { device } => format!("alsasrc device={device}"),
    };
    let aec = if cfg.echo_cancel { " ! webrtcdsp echo-cancel=true noise-suppression=true" } else { "" };
    let audio = format!(
        "{mic} ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2{aec} ! audioconvert ! \
         opusenc name=aenc inband-fec=true bitrate=32000 frame-size=20 ! rtpopuspay pt={OPUS_PT} ! \
         appsink name=asink sync=false max-buffers=256 drop=true"
    );
    format!("{video}  {audio}")
}

/// The play pipeline: appsrcs `vsrc`/`asrc` of RTP, jitter buffers, depayloaders,
/// decoders and the configured sinks.
pub fn play(cfg: &MediaConfig, decoder: &str) -> String {
    let vout = match cfg.video_sink {
        VideoSink::Fake => "fakesink name=vout sync=false",
        VideoSink::Auto => "autovideosink name=vout sync=false",
        VideoSink::Kms => "kmssink name=vout sync=false",
        VideoSink::Wayland => "waylandsink name=vout sync=false",
    };
    let aout = match &cfg.audio_sink {
        AudioSink::Fake => "fakesink name=aout sync=false".to_string(),
        AudioSink::Auto => "autoaudiosink name=aout sync=false".to_string(),
        AudioSink::Alsa { device } => format!("alsasink name=aout device={device} sync=false"),
    };
    // With echo cancellation, played audio passes the probe that the capture side's
    // webrtcdsp uses as its far-end reference.
    let probe = if cfg.echo_cancel { "webrtcechoprobe ! " } else { "" };
    format!(
        "appsrc name=vsrc is-live=true format=time do-timestamp=true \
         caps=\"application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,payload={H264_PT}\" ! \
         rtpjitterbuffer latency=80 do-lost=true ! rtph264depay ! h264parse ! {decoder} name=vdec ! \
         videoconvert ! {vout}  \
         appsrc name=asrc is-live=true format=time do-timestamp=true \
         caps=\"application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload={OPUS_PT}\" ! \
         rtpjitterbuffer latency=60 do-lost=true ! rtpopusdepay ! opusdec name=adec plc=true use-inband-fec=true ! \
         audioconvert ! audioresample ! {probe}{aout}"
    )
}

/// The H.264 decoder to use: the board's hardware decoder when present, else libav.
pub fn decoder(present: impl Fn(&str) -> bool) -> &'static str {
    ["v4l2h264dec", "nvv4l2decoder", "vaapih264dec"].into_iter().find(|d| present(d)).unwrap_or("avdec_h264")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_variants() {
        let mut cfg = MediaConfig::small();
        let p = publish(&cfg, Encoder::X264, true);
        assert!(p.contains("videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1"));
        assert!(p.contains("timeoverlay"));
        assert!(!publish(&cfg, Encoder::X264, false).contains("timeoverlay"));
        assert!(p.contains("opusenc name=aenc inband-fec=true"));
        assert!(p.contains("rtph264pay pt=102 mtu=1200 config-interval=-1"));
        cfg.video = VideoSource::V4l2 { device: "/dev/video0".into(), mjpeg: true };
        cfg.audio = AudioSource::Alsa { device: "hw:1,0".into() };
        cfg.echo_cancel = true;
        let p = publish(&cfg, Encoder::V4l2, false);
        assert!(p.contains("v4l2src device=/dev/video0 ! image/jpeg"));
        assert!(p.contains("alsasrc device=hw:1,0"));
        assert!(p.contains("webrtcdsp echo-cancel=true"));
        cfg.video = VideoSource::Libcamera;
        assert!(publish(&cfg, Encoder::OpenH264, false).starts_with("libcamerasrc"));
    }

    #[test]
    fn play_variants() {
        let mut cfg = MediaConfig::small();
        let p = play(&cfg, "avdec_h264");
        assert!(p.contains("avdec_h264 name=vdec"));
        assert!(p.contains("fakesink name=vout"));
        assert!(!p.contains("webrtcechoprobe"));
        cfg.video_sink = VideoSink::Kms;
        cfg.audio_sink = AudioSink::Alsa { device: "default".into() };
        cfg.echo_cancel = true;
        let p = play(&cfg, "v4l2h264dec");
        assert!(p.contains("kmssink name=vout"));
        assert!(p.contains("webrtcechoprobe ! alsasink name=aout device=default"));
        assert_eq!(decoder(|d| d == "nvv4l2decoder"), "nvv4l2decoder");
        assert_eq!(decoder(|_| false), "avdec_h264");
    }
}
