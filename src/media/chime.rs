//! The ring chime: a short two-tone "ding-dong" through the audio sink, played once per
//! ring period while a call rings. Each chime is its own small pipeline that ends by itself.

use std::time::Duration;

use futures_util::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;

use super::running::launch;
use super::{AudioSink, MediaError};

/// How long one chime lasts.
pub const CHIME_LENGTH: Duration = Duration::from_millis(700);

/// The chime's pipeline description for `sink`.
pub fn description(sink: &AudioSink) -> String {
    let out = match sink {
        AudioSink::Fake => "fakesink sync=true".to_string(),
        AudioSink::Auto => "autoaudiosink".to_string(),
        AudioSink::Alsa { device } => format!("alsasink device={device}"),
    };
    // 4800 samples = 100 ms at 48 kHz: 300 ms at 880 Hz, then 400 ms at 660 Hz.
    let tone = |freq: u32, buffers: u32| {
        format!(
            "audiotestsrc wave=sine freq={freq} volume=0.4 samplesperbuffer=4800 num-buffers={buffers} ! audio/x-raw,rate=48000,channels=1 ! c."
        )
    };
    format!("concat name=c ! audioconvert ! audioresample ! {out}  {}  {}", tone(880, 3), tone(660, 4))
}

/// Plays one chime and returns when it has been played (or failed). Bounded by 5 s.
pub async fn play(sink: &AudioSink) -> Result<(), MediaError> {
    super::init()?;
    let pipeline = launch(&description(sink))?;
    let bus = pipeline.bus().expect("a pipeline has a bus");
    let mut messages = bus.stream();
    pipeline.set_state(gst::State::Playing).map_err(|e| MediaError::Build(format!("the chime does not start: {e}")))?;
    let wait = async {
        while let Some(msg) = messages.next().await {
            match msg.view() {
                gst::MessageView::Eos(_) => return Ok(()),
                gst::MessageView::Error(e) => {
                    return Err(MediaError::Runtime {
                        element: e.src().map(|s| s.name().to_string()).unwrap_or_default(),
                        message: e.error().to_string(),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    };
    let r = tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| Err(MediaError::Runtime { element: "chime".into(), message: "did not finish".into() }));
    let _ = pipeline.set_state(gst::State::Null);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_chime_plays_to_its_end_in_real_time() {
        let t = std::time::Instant::now();
        play(&AudioSink::Fake).await.expect("chime");
        assert!(t.elapsed() >= CHIME_LENGTH - Duration::from_millis(50), "{:?}", t.elapsed());
        let bad = play(&AudioSink::Alsa { device: "callbox-no-such-pcm".into() }).await;
        assert!(bad.is_err(), "a missing ALSA device is reported");
    }
}
