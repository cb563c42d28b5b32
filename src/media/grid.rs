//! The kiosk grid: one compositor pipeline showing every played stream (and the local
//! preview) as tiles on one display sink. Play pipelines hand their decoded pictures over
//! by channel (`intervideosink`/`intervideosrc`), so a stream coming or going rebuilds only
//! the grid, never a call's pipelines.

use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;

use super::running::{counters, launch, set_playing};
use super::{Counters, MediaConfig, MediaError, pipeline};

/// A running grid. Dropping it stops it.
pub struct Grid {
    pipeline: gst::Pipeline,
    /// The channels shown, in tile order.
    pub channels: Vec<String>,
    /// Composed frames that reached the sink (counter 1).
    pub counters: Arc<Counters>,
}

impl Grid {
    /// Starts a grid of `channels` (see [`pipeline::PREVIEW_CHANNEL`], [`pipeline::play_channel`]).
    pub fn start(cfg: &MediaConfig, channels: Vec<String>) -> Result<Grid, MediaError> {
        super::init()?;
        let pipeline = launch(&pipeline::grid(cfg, &channels))?;
        let counters = counters(&pipeline, [None, Some(("gout", "sink")), None]);
        set_playing(&pipeline, "the grid")?;
        Ok(Grid { pipeline, channels, counters })
    }
}

impl Drop for Grid {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Layout;

    #[test]
    fn grid_composes_the_streams_it_is_given() {
        crate::media::init().unwrap();
        let cfg = MediaConfig { layout: Layout::Grid, ..MediaConfig::small() };
        // Two "played streams" feeding their channels, as play pipelines do.
        let feeds: Vec<gst::Pipeline> = ["a", "b"]
            .iter()
            .map(|s| {
                let d = format!(
                    "videotestsrc is-live=true ! video/x-raw,width=160,height=120,framerate=15/1 ! intervideosink channel={}",
                    pipeline::play_channel(s)
                );
                let p = launch(&d).unwrap();
                p.set_state(gst::State::Playing).unwrap();
                p
            })
            .collect();
        let grid = Grid::start(&cfg, vec![pipeline::play_channel("a"), pipeline::play_channel("b")]).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while grid.counters.snapshot()[1] < 10 {
            assert!(std::time::Instant::now() < deadline, "the grid composed no frames");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for f in feeds {
            let _ = f.set_state(gst::State::Null);
        }
    }
}
