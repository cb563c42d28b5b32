//! A JPEG of a stream's latest picture, decoded on the server from the SFU's kept keyframe
//! (`GET .../streams/{stream}/snapshot.jpg`): any publisher (a device, a browser over WHIP)
//! has one, and nothing is asked of the device. One short pipeline per request:
//! RTP in, `rtph264depay ! h264parse ! <decoder> ! videoconvert ! jpegenc`, one JPEG out.
//!
//! Under the server unit's `MemoryDenyWriteExecute=yes`, GStreamer's ORC cannot generate
//! code at run time and falls back to its slower C paths (`videoconvert`); the benchmark
//! measures the difference with `ORC_CODE=backup` (docs/benchmarks.md).

use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;

/// The decoders tried, in order.
const DECODERS: [&str; 2] = ["avdec_h264", "openh264dec"];

/// A decoded picture.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The JPEG.
    pub jpeg: Vec<u8>,
    /// Its size.
    pub width: i32,
    /// Its size.
    pub height: i32,
}

/// Decodes `packets` (one H.264 keyframe as RTP) into a JPEG of `quality` (1..=100),
/// within `within`. Blocking: run it off the async threads.
pub fn jpeg(packets: Vec<Vec<u8>>, quality: i32, within: Duration) -> Result<Snapshot, String> {
    super::init().map_err(|e| e.to_string())?;
    let decoder =
        DECODERS.iter().find(|d| super::has_element(d)).ok_or("no H.264 decoder (install gstreamer1.0-libav)")?;
    let desc = format!(
        "appsrc name=src format=time caps=application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,payload=96 \
         ! rtph264depay ! h264parse ! {decoder} ! videoconvert ! jpegenc quality={} \
         ! appsink name=sink sync=false max-buffers=1",
        quality.clamp(1, 100)
    );
    let pipeline = gst::parse::launch(&desc)
        .map_err(|e| format!("snapshot pipeline: {e}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "snapshot pipeline: not a pipeline")?;
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gstreamer_app::AppSrc>().ok())
        .ok_or("snapshot pipeline: no appsrc")?;
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gstreamer_app::AppSink>().ok())
        .ok_or("snapshot pipeline: no appsink")?;
    let result = (|| {
        pipeline.set_state(gst::State::Playing).map_err(|e| format!("snapshot pipeline: {e}"))?;
        for p in packets {
            src.push_buffer(gst::Buffer::from_mut_slice(p)).map_err(|e| format!("snapshot: {e:?}"))?;
        }
        let _ = src.end_of_stream();
        let sample = sink.try_pull_sample(gst::ClockTime::from_nseconds(within.as_nanos() as u64)).ok_or_else(
            || match pipeline.bus().and_then(|b| b.pop_filtered(&[gst::MessageType::Error])) {
                Some(m) => match m.view() {
                    gst::MessageView::Error(e) => format!("the keyframe did not decode: {}", e.error()),
                    _ => "the keyframe did not decode".to_string(),
                },
                None => "the keyframe did not decode in time".to_string(),
            },
        )?;
        let caps = sample.caps().and_then(|c| c.structure(0).map(|s| (s.get::<i32>("width"), s.get::<i32>("height"))));
        let (width, height) = match caps {
            Some((Ok(w), Ok(h))) => (w, h),
            _ => (0, 0),
        };
        let buffer = sample.buffer().ok_or("snapshot: an empty sample")?;
        let map = buffer.map_readable().map_err(|_| "snapshot: unreadable buffer")?;
        Ok(Snapshot { jpeg: map.as_slice().to_vec(), width, height })
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}
