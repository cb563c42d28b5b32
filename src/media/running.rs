//! What every pipeline of callbox shares: parsing a description, counting buffers at
//! named elements, forwarding bus errors, and starting.

use std::sync::Arc;

use futures_util::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;

use super::{Counters, MediaError};

/// Parses a description into a pipeline.
pub(crate) fn launch(desc: &str) -> Result<gst::Pipeline, MediaError> {
    gst::parse::launch(desc)
        .map_err(|e| MediaError::Build(e.to_string()))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| MediaError::Build("not a pipeline".into()))
}

/// Hands the pipeline's first error (or an unexpected end of stream) to `errors`: after it
/// the pipeline counts as failed and is rebuilt, so later ones say nothing new. Sound
/// levels (`level` elements named in `levels`, each with its slot) go to `counters`.
pub(super) fn watch_bus(
    pipeline: &gst::Pipeline,
    errors: super::ErrorSink,
    counters: Arc<Counters>,
    levels: &'static [(&'static str, usize)],
) -> tokio::task::JoinHandle<()> {
    let bus = pipeline.bus().expect("a pipeline has a bus");
    tokio::spawn(async move {
        let mut messages = bus.stream();
        while let Some(msg) = messages.next().await {
            let err = match msg.view() {
                gst::MessageView::Element(e) => {
                    let src = e.src().map(|s| s.name());
                    if let (Some(src), Some(st)) = (src, e.structure())
                        && st.name() == "level"
                        && let Some(&(_, slot)) = levels.iter().find(|(n, _)| *n == src.as_str())
                        && let Some(db) = loudest_rms(st)
                    {
                        counters.set_level(slot, db as f32);
                    }
                    continue;
                }
                gst::MessageView::Error(e) => MediaError::Runtime {
                    element: e.src().map(|s| s.name().to_string()).unwrap_or_default(),
                    message: e.error().to_string(),
                },
                gst::MessageView::Eos(_) => {
                    MediaError::Runtime { element: "pipeline".into(), message: "source ended".into() }
                }
                _ => continue,
            };
            errors(err);
            return;
        }
    })
}

/// The loudest channel's RMS of a `level` message, dBFS.
fn loudest_rms(st: &gst::StructureRef) -> Option<f64> {
    let rms = st.get::<gst::glib::ValueArray>("rms").ok()?;
    rms.iter().filter_map(|v| v.get::<f64>().ok()).reduce(f64::max)
}

/// Records the size of the pictures `element`'s `pad` carries in `counters` (from its caps).
pub(super) fn watch_size(pipeline: &gst::Pipeline, element: &str, pad: &str, counters: &Arc<Counters>) {
    let Some(pad) = pipeline.by_name(element).and_then(|e| e.static_pad(pad)) else { return };
    let c = counters.clone();
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        if let Some(gst::PadProbeData::Event(ev)) = &info.data
            && let gst::EventView::Caps(caps) = ev.view()
            && let Some(st) = caps.caps().structure(0)
            && let (Ok(w), Ok(h)) = (st.get::<i32>("width"), st.get::<i32>("height"))
        {
            c.set_size(w.max(0) as u32, h.max(0) as u32);
        }
        gst::PadProbeReturn::Ok
    });
}

/// Counts buffers passing `element`'s `pad` into `counters[which]`.
fn count_buffers(pipeline: &gst::Pipeline, element: &str, pad: &str, counters: &Arc<Counters>, which: usize) {
    let Some(el) = pipeline.by_name(element) else { return };
    let Some(pad) = el.static_pad(pad) else { return };
    let c = counters.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        c.bump(which);
        gst::PadProbeReturn::Ok
    });
}

/// New counters fed by buffer probes at `probes[i]` = (element, pad) for counter `i`.
pub(super) fn counters(pipeline: &gst::Pipeline, probes: [Option<(&str, &str)>; 3]) -> Arc<Counters> {
    let counters = Arc::new(Counters::default());
    for (which, probe) in probes.into_iter().enumerate() {
        if let Some((element, pad)) = probe {
            count_buffers(pipeline, element, pad, &counters, which);
        }
    }
    counters
}

/// Sets the pipeline playing; `what` names it in the error.
pub(super) fn set_playing(pipeline: &gst::Pipeline, what: &str) -> Result<(), MediaError> {
    pipeline
        .set_state(gst::State::Playing)
        .map(|_| ())
        .map_err(|e| MediaError::Build(format!("{what} does not start: {e}")))
}
