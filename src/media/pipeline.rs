//! Pipeline descriptions (`gst-launch` syntax) for publishing and playing, per source,
//! encoder and sink. Named elements the code relies on: `vcaps` (raw video, counted as
//! captured), `camgate` (the camera switch), `venc` (encoder, counted as encoded), `micvol`
//! (the microphone switch), `mlevel` (captured sound level), `vsink`/`asink` (RTP out),
//! `vsrc`/`asrc` (RTP in), `vgate` (a played stream's video switch), `vdec` (decoded),
//! `vout` (rendered), `adec` (audio decoded), `alevel` (the stream's sound level), `pvol`
//! (speaker and volume), `olevel` (the level played).
//!
//! A stream without video (`VideoSource::None`) has no video branch; a player told to play
//! no video (`video: false`) takes the video RTP into a `fakesink` without depayloading or
//! decoding it.

use super::encoder::Encoder;
use super::{AudioSink, AudioSource, Layout, MediaConfig, VideoRate, VideoSink, VideoSource};
use crate::rtc::{H264_PT, OPUS_PT};
pub use callbox_core::media::jitter::JitterWait;
pub use callbox_core::media::rules::{PREVIEW_CHANNEL, opus_loss_percent, play_channel, video_jitter_ms};

/// RTP packets are kept under this size (fits any path MTU with SRTP and IP headers).
pub const RTP_MTU: u32 = 1200;

/// The publish pipeline: source, encoder, payloader, appsinks `vsink` and `asink`.
/// `overlay`: draw a clock on the test pattern (needs the pango plugin).
///
/// `rate` is what the video starts held to (adaptation changes it while it runs): the
/// capture stays at the configured size and rate (a camera is not renegotiated), and
/// `vadapt` scales and drops frames down to `rate`'s before the encoder.
pub fn publish(cfg: &MediaConfig, rate: VideoRate, encoder: Encoder, overlay: bool) -> String {
    // The camera is asked for its own orientation: a quarter turn swaps the sides.
    let (w, h, fps) =
        if cfg.rotate % 180 == 90 { (cfg.height, cfg.width, cfg.fps) } else { (cfg.width, cfg.height, cfg.fps) };
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
        VideoSource::None => String::new(),
    };
    // The camera switch: closed, no frame reaches the encoder or the preview (nothing is
    // sent; reopened, the encoder is asked for a keyframe).
    let source =
        if source.is_empty() { source } else { format!("{source}{} ! valve name=camgate drop=false", turn(cfg)) };
    // Where a preview can be shown (a grid tile; the single layout's real display while it
    // plays nothing), the raw picture also goes to the preview channel: switched on and
    // off at run time by what shows the channel, not by rebuilding this pipeline.
    let can_preview = match cfg.layout {
        Layout::Grid => true,
        Layout::Single => matches!(cfg.video_sink, VideoSink::Auto | VideoSink::Kms | VideoSink::Wayland),
    };
    let (source, preview) = if can_preview && cfg.video != VideoSource::None {
        (
            format!("{source} ! tee name=vt"),
            format!(
                "  vt. ! queue max-size-buffers=2 leaky=downstream ! intervideosink channel={PREVIEW_CHANNEL} sync=false"
            ),
        )
    } else {
        (source, String::new())
    };
    let video = if source.is_empty() {
        String::new()
    } else {
        format!(
            "{source} ! queue max-size-buffers=2 leaky=downstream ! videoscale ! videorate ! \
             capsfilter name=vadapt caps={adapt} ! {enc} ! \
             rtph264pay pt={H264_PT} mtu={RTP_MTU} config-interval=-1 aggregate-mode=zero-latency ! \
             appsink name=vsink sync=false max-buffers=256 drop=true  ",
            adapt = rate.caps(),
            enc = encoder.description(rate.kbps, fps)
        )
    };
    let mic = match &cfg.audio {
        // A tone loud enough to be heard as voice: Opus makes in-band FEC only for frames its
        // voice detector calls active, and a quiet tone is not (measured: at volume 0.1, one
        // packet in eight carried FEC; at 0.8, all).
        AudioSource::Test => "audiotestsrc is-live=true wave=sine freq=440 volume=0.8".to_string(),
        AudioSource::Alsa { device } => format!("alsasrc device={device}"),
        AudioSource::None => return format!("{video}{preview}"),
    };
    let aec = if cfg.echo_cancel { " ! webrtcdsp echo-cancel=true noise-suppression=true" } else { "" };
    // Mono voice: a door's microphone is one channel, and Opus's in-band FEC (a coarse copy
    // of each frame in the next packet) is only made in its SILK and hybrid (voice) modes.
    let audio = format!(
        "{mic} ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=1{aec} ! volume name=micvol ! \
         level name=mlevel interval={LEVEL_NS} ! audioconvert ! \
         opusenc name=aenc audio-type=voice bitrate=32000 frame-size=20 inband-fec={fec} packet-loss-percentage={loss} dtx={dtx} ! \
         rtpopuspay pt={OPUS_PT} ! appsink name=asink sync=false max-buffers=256 drop=true",
        fec = cfg.repair,
        loss = opus_loss_percent(cfg.repair, 0.0),
        dtx = cfg.dtx,
    );
    format!("{video}{audio}{preview}")
}

/// How often the `level` elements measure, nanoseconds (the sound level events' period).
pub const LEVEL_NS: u64 = 100_000_000;

/// The camera's turn and mirror (`videoflip`), before everything that uses the picture.
fn turn(cfg: &MediaConfig) -> String {
    let rotate = match cfg.rotate {
        90 => " ! videoflip method=clockwise",
        180 => " ! videoflip method=rotate-180",
        270 => " ! videoflip method=counterclockwise",
        _ => "",
    };
    let flip = match cfg.flip {
        super::Flip::None => "",
        super::Flip::Horizontal => " ! videoflip method=horizontal-flip",
        super::Flip::Vertical => " ! videoflip method=vertical-flip",
    };
    format!("{rotate}{flip}")
}

/// The display sink element for `sink`, named `name`.
fn display_sink(sink: VideoSink, name: &str) -> String {
    match sink {
        VideoSink::Fake => format!("fakesink name={name} sync=false"),
        VideoSink::Auto => format!("autovideosink name={name} sync=false"),
        VideoSink::Kms => format!("kmssink name={name} sync=false"),
        VideoSink::Wayland => format!("waylandsink name={name} sync=false"),
        VideoSink::None => format!("fakesink name={name} sync=false"),
    }
}

/// The grid: one tile per channel (preview first, then played streams), as square as
/// possible, on a `width` x `height` canvas, into the configured sink (named `gout`).
pub fn grid(cfg: &MediaConfig, channels: &[String]) -> String {
    let n = channels.len().max(1) as u32;
    let cols = (n as f64).sqrt().ceil() as u32;
    let rows = n.div_ceil(cols);
    let (tw, th) = ((cfg.width / cols) & !1, (cfg.height / rows) & !1);
    let mut pads = String::new();
    let mut inputs = String::new();
    for (i, ch) in channels.iter().enumerate() {
        let (x, y) = ((i as u32 % cols) * tw, (i as u32 / cols) * th);
        pads.push_str(&format!(" sink_{i}::xpos={x} sink_{i}::ypos={y}"));
        inputs.push_str(&format!(
            "  intervideosrc channel={ch} timeout=1000000000 ! videoconvert ! videoscale ! \
             video/x-raw,width={tw},height={th} ! queue max-size-buffers=2 leaky=downstream ! mix.sink_{i}"
        ));
    }
    format!(
        "compositor name=mix background=black{pads} ! video/x-raw,width={w},height={h},framerate={fps}/1 ! \
         videoconvert ! {sink}{inputs}",
        w = cfg.width,
        h = cfg.height,
        fps = cfg.fps,
        sink = display_sink(cfg.video_sink, "gout"),
    )
}

/// The play pipeline: appsrcs `vsrc`/`asrc` of RTP, jitter buffers, depayloaders,
/// decoders and the configured sinks. `video`: decode the stream's video (false: the stream
/// has none, or the device has no display).
pub fn play(cfg: &MediaConfig, decoder: &str, stream_id: &str, video: bool) -> String {
    let vout = match cfg.layout {
        Layout::Grid => format!("intervideosink name=vout channel={} sync=false", play_channel(stream_id)),
        Layout::Single => display_sink(cfg.video_sink, "vout"),
    };
    let aout = match &cfg.audio_sink {
        AudioSink::Fake => "fakesink name=aout sync=false".to_string(),
        AudioSink::Auto => "autoaudiosink name=aout sync=false".to_string(),
        AudioSink::Alsa { device } => format!("alsasink name=aout device={device} sync=false"),
    };
    // With echo cancellation, played audio passes the probe that the capture side's
    // webrtcdsp uses as its far-end reference.
    let probe = if cfg.echo_cancel { "webrtcechoprobe ! " } else { "" };
    // The wait starts short and the player's JitterWait sets it as it measures.
    let jitter = JitterWait::START.as_millis();
    let vsrc = format!(
        "appsrc name=vsrc is-live=true format=time do-timestamp=true \
         caps=\"application/x-rtp,media=video,clock-rate=90000,encoding-name=H264,payload={H264_PT}\""
    );
    let video = if video {
        // `vgate` closed (the application muted this stream's video): packets are dropped
        // before the depayloader, so nothing is decoded.
        format!(
            "{vsrc} ! rtpjitterbuffer name=vjit latency={jitter} do-lost=true ! valve name=vgate drop=false ! \
             rtph264depay ! h264parse ! {decoder} name=vdec ! videoconvert ! {vout}"
        )
    } else {
        format!("{vsrc} ! fakesink name=vnull sync=false async=false")
    };
    format!(
        "{video}  \
         appsrc name=asrc is-live=true format=time do-timestamp=true \
         caps=\"application/x-rtp,media=audio,clock-rate=48000,encoding-name=OPUS,payload={OPUS_PT}\" ! \
         rtpjitterbuffer latency=60 do-lost=true ! rtpopusdepay ! opusdec name=adec plc=true use-inband-fec=true ! \
         audioconvert ! audioresample ! level name=alevel interval={LEVEL_NS} ! volume name=pvol ! \
         level name=olevel interval={LEVEL_NS} ! {probe}{aout}"
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
    fn grid_tiles_and_preview() {
        let mut cfg = MediaConfig { width: 640, height: 480, layout: Layout::Grid, ..MediaConfig::small() };
        let chans: Vec<String> = vec![PREVIEW_CHANNEL.into(), play_channel("a"), play_channel("b")];
        let g = grid(&cfg, &chans);
        // Three tiles: two columns, two rows of 320x240.
        assert!(
            g.contains("sink_0::xpos=0 sink_0::ypos=0 sink_1::xpos=320 sink_1::ypos=0 sink_2::xpos=0 sink_2::ypos=240"),
            "{g}"
        );
        assert!(g.contains("intervideosrc channel=callbox-play-b"));
        assert!(g.contains("fakesink name=gout"));
        cfg.video_sink = VideoSink::Kms;
        assert!(grid(&cfg, &chans[..1]).contains("width=640,height=480 ! queue"));
        assert!(grid(&cfg, &chans).contains("kmssink name=gout"));
        let p = publish(&cfg, cfg.full_rate(), Encoder::X264, false);
        assert!(p.contains("tee name=vt") && p.contains("intervideosink channel=callbox-preview"), "{p}");
        // The preview's tap stays when it starts switched off (it is switched at run time);
        // a single layout without a real display has none.
        cfg.preview = false;
        assert!(publish(&cfg, cfg.full_rate(), Encoder::X264, false).contains("intervideosink"));
        cfg.layout = Layout::Single;
        assert!(
            publish(&cfg, cfg.full_rate(), Encoder::X264, false).contains("intervideosink"),
            "kms: the display's preview"
        );
        cfg.video_sink = VideoSink::Fake;
        assert!(!publish(&cfg, cfg.full_rate(), Encoder::X264, false).contains("intervideosink"));
    }

    #[test]
    fn publish_variants() {
        let mut cfg = MediaConfig::small();
        let p = publish(&cfg, cfg.full_rate(), Encoder::X264, true);
        assert!(p.contains("videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1"));
        assert!(p.contains("timeoverlay"));
        assert!(!publish(&cfg, cfg.full_rate(), Encoder::X264, false).contains("timeoverlay"));
        assert!(p.contains("channels=1"));
        assert!(p.contains("opusenc name=aenc audio-type=voice bitrate=32000 frame-size=20 inband-fec=true packet-loss-percentage=10 dtx=false"));
        let off = MediaConfig { repair: false, dtx: true, ..MediaConfig::small() };
        let p_off = publish(&off, off.full_rate(), Encoder::X264, false);
        assert!(p_off.contains("inband-fec=false packet-loss-percentage=0 dtx=true"), "{p_off}");
        // Both start short: the player's JitterWait grows the wait as it measures.
        assert!(play(&off, "avdec_h264", "s", true).contains("rtpjitterbuffer name=vjit latency=10 "));
        assert!(play(&cfg, "avdec_h264", "s", true).contains("rtpjitterbuffer name=vjit latency=10 "));
        assert_eq!(opus_loss_percent(true, 0.0), 10);
        assert_eq!(opus_loss_percent(true, 0.123), 13);
        assert_eq!(opus_loss_percent(true, 0.9), 30);
        assert_eq!(opus_loss_percent(false, 0.5), 0);
        assert!(p.contains("rtph264pay pt=102 mtu=1200 config-interval=-1"));
        // Adaptation's stage: full size and rate unless told otherwise, before the encoder.
        assert!(p.contains(
            "videoscale ! videorate ! capsfilter name=vadapt caps=video/x-raw,width=320,height=240,framerate=15/1 ! videoconvert ! x264enc"
        ));
        let half = VideoRate { kbps: 120, width: 160, height: 120, fps: 7 };
        let p = publish(&cfg, half, Encoder::X264, false);
        assert!(p.contains("caps=video/x-raw,width=160,height=120,framerate=7/1"));
        assert!(p.contains("x264enc name=venc tune=zerolatency speed-preset=ultrafast bitrate=120 "));
        // The capture is not renegotiated.
        assert!(p.contains("videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=15/1"));
        cfg.video = VideoSource::V4l2 { device: "/dev/video0".into(), mjpeg: true };
        cfg.audio = AudioSource::Alsa { device: "hw:1,0".into() };
        cfg.echo_cancel = true;
        let p = publish(&cfg, cfg.full_rate(), Encoder::V4l2, false);
        assert!(p.contains("v4l2src device=/dev/video0 ! image/jpeg"));
        assert!(p.contains("alsasrc device=hw:1,0"));
        assert!(p.contains("webrtcdsp echo-cancel=true"));
        cfg.video = VideoSource::Libcamera;
        assert!(publish(&cfg, cfg.full_rate(), Encoder::OpenH264, false).starts_with("libcamerasrc"));
        assert!(p.contains("capsfilter name=vcaps ! valve name=camgate drop=false"));
        assert!(p.contains("volume name=micvol ! level name=mlevel"));
        // Audio only: no camera, no encoder, no preview, whatever the layout.
        cfg.video = VideoSource::None;
        cfg.layout = Layout::Grid;
        let a = publish(&cfg, cfg.full_rate(), Encoder::X264, false);
        assert!(a.starts_with("alsasrc") && !a.contains("venc") && !a.contains("intervideosink"), "{a}");
        // Video only.
        cfg.video = VideoSource::Test;
        cfg.audio = AudioSource::None;
        let v = publish(&cfg, cfg.full_rate(), Encoder::X264, false);
        assert!(v.contains("name=vsink") && !v.contains("opusenc"), "{v}");
        // A camera mounted sideways: asked for its own orientation, turned before the camera
        // switch (so the preview and the encoder both get the turned picture).
        cfg.rotate = 90;
        cfg.flip = crate::media::Flip::Horizontal;
        let r = publish(&cfg, cfg.full_rate(), Encoder::X264, false);
        assert!(
            r.contains("video/x-raw,width=240,height=320,framerate=15/1 ! capsfilter name=vcaps ! videoflip method=clockwise ! videoflip method=horizontal-flip ! valve name=camgate"),
            "{r}"
        );
        assert!(r.contains("caps=video/x-raw,width=320,height=240"), "the published picture is width x height: {r}");
    }

    #[test]
    fn play_variants() {
        let mut cfg = MediaConfig::small();
        let p = play(&cfg, "avdec_h264", "s1", true);
        assert!(p.contains("valve name=vgate drop=false ! rtph264depay"));
        assert!(p.contains("level name=alevel interval=100000000 ! volume name=pvol ! level name=olevel"));
        let audio_only = play(&cfg, "avdec_h264", "s1", false);
        assert!(!audio_only.contains("h264depay") && !audio_only.contains("vdec"), "{audio_only}");
        assert!(audio_only.contains("fakesink name=vnull") && audio_only.contains("opusdec"));
        assert!(p.contains("avdec_h264 name=vdec"));
        assert!(p.contains("fakesink name=vout"));
        assert!(!p.contains("webrtcechoprobe"));
        cfg.video_sink = VideoSink::Kms;
        cfg.audio_sink = AudioSink::Alsa { device: "default".into() };
        cfg.echo_cancel = true;
        let p = play(&cfg, "v4l2h264dec", "s1", true);
        assert!(p.contains("kmssink name=vout"));
        assert!(p.contains("webrtcechoprobe ! alsasink name=aout device=default"));
        cfg.layout = Layout::Grid;
        assert!(play(&cfg, "avdec_h264", "door", true).contains("intervideosink name=vout channel=callbox-play-door"));
        assert_eq!(decoder(|d| d == "nvv4l2decoder"), "nvv4l2decoder");
        assert_eq!(decoder(|_| false), "avdec_h264");
    }
}
