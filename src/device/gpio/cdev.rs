//! The Linux GPIO character device (`/dev/gpiochipN`, uAPI v2 through gpiocdev): Jetson,
//! Rockchip, Allwinner, and a Raspberry Pi too. Buttons get kernel debouncing and both-edge
//! events, read on a thread of their own; outputs are one line request.
//! Untested on real hardware here (no GPIO chip on the build machine); see docs/device.md.

use std::time::{Duration, Instant};

use gpiocdev::line::{Bias, EdgeKind, Value};
use gpiocdev::request::Request;
use tokio::sync::mpsc;

use super::{Edge, GpioBackend, GpioError, GpioKind, Lines, Output};

/// Lines on one GPIO chip.
pub struct CdevGpio {
    outputs: Option<Request>,
    lines: Vec<(Output, u32)>,
}

impl CdevGpio {
    /// Requests the button lines as inputs (pull-up when active low) and the outputs as
    /// outputs, all off.
    pub fn open(
        chip: &str,
        lines: &Lines,
        active_low: bool,
        debounce: Duration,
        edges: mpsc::Sender<Edge>,
    ) -> Result<CdevGpio, GpioError> {
        gpiocdev::chip::Chip::from_path(chip)
            .map_err(|e| GpioError::Open { what: chip.to_string(), reason: e.to_string() })?;
        let line_err =
            |line: u32, e: gpiocdev::Error| GpioError::Line { line, name: format!("on {chip}"), reason: e.to_string() };
        if !lines.buttons.is_empty() {
            let offsets: Vec<u32> = lines.buttons.iter().map(|(_, l)| *l).collect();
            let mut b = Request::builder();
            b.on_chip(chip).with_consumer("callbox").with_lines(&offsets).as_input();
            b.with_edge_detection(gpiocdev::line::EdgeDetection::BothEdges).with_debounce_period(debounce);
            if active_low {
                b.as_active_low().with_bias(Bias::PullUp);
            } else {
                b.with_bias(Bias::PullDown);
            }
            let req = b.request().map_err(|e| line_err(offsets[0], e))?;
            let map = lines.buttons.clone();
            std::thread::Builder::new()
                .name("callbox-gpio".into())
                .spawn(move || {
                    loop {
                        let ev = match req.read_edge_event() {
                            Ok(ev) => ev,
                            Err(e) => {
                                tracing::error!(error = %e, "GPIO button events stopped");
                                return;
                            }
                        };
                        let Some((button, _)) = map.iter().find(|(_, l)| *l == ev.offset) else { continue };
                        let edge = Edge { button: *button, pressed: ev.kind == EdgeKind::Rising, at: Instant::now() };
                        if edges.blocking_send(edge).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| GpioError::Open { what: chip.to_string(), reason: e.to_string() })?;
        }
        let outputs = if lines.outputs.is_empty() {
            None
        } else {
            let offsets: Vec<u32> = lines.outputs.iter().map(|(_, l)| *l).collect();
            let req = Request::builder()
                .on_chip(chip)
                .with_consumer("callbox")
                .with_lines(&offsets)
                .as_output(Value::Inactive)
                .request()
                .map_err(|e| line_err(offsets[0], e))?;
            Some(req)
        };
        Ok(CdevGpio { outputs, lines: lines.outputs.clone() })
    }
}

impl GpioBackend for CdevGpio {
    fn name(&self) -> &'static str {
        GpioKind::Cdev.as_str()
    }

    fn set(&mut self, output: Output, on: bool) -> Result<(), GpioError> {
        let (Some(req), Some((_, line))) = (&self.outputs, self.lines.iter().find(|(o, _)| *o == output)) else {
            return Ok(());
        };
        let v = if on { Value::Active } else { Value::Inactive };
        req.set_value(*line, v).map_err(|e| GpioError::Set { name: output.key(), reason: e.to_string() })
    }
}
