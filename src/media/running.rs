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
/// the pipeline counts as failed and is rebuilt, so later ones say nothing new.
pub(super) fn watch_bus(pipeline: &gst::Pipeline, errors: super::ErrorSink) -> tokio::task::JoinHandle<()> {
    let bus = pipeline.bus().expect("a pipeline has a bus");
    tokio::spawn(async move {
        let mut messages = bus.stream();
        while let Some(msg) = messages.next().await {
            let err = match msg.view() {
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
