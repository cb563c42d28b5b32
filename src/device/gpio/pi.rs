//! Raspberry Pi GPIO through rppal (BCM pin numbers). rppal refuses any other board, so the
//! backend is only chosen by config. Buttons use rppal's interrupt thread with debouncing.
//! Untested on a real Pi here; see docs/device.md.

use std::time::{Duration, Instant};

use rppal::gpio::{Gpio, InputPin, OutputPin, Trigger};
use tokio::sync::mpsc;

use super::{Edge, GpioBackend, GpioError, GpioKind, Lines, Output};

/// Pins of a Raspberry Pi.
pub struct PiGpio {
    _inputs: Vec<InputPin>,
    outputs: Vec<(Output, OutputPin)>,
}

impl PiGpio {
    /// Claims the button pins as inputs with interrupts and the output pins, all low.
    pub fn open(
        lines: &Lines,
        active_low: bool,
        debounce: Duration,
        edges: mpsc::Sender<Edge>,
    ) -> Result<PiGpio, GpioError> {
        let gpio =
            Gpio::new().map_err(|e| GpioError::Open { what: "Raspberry Pi GPIO".into(), reason: e.to_string() })?;
        let pin_err =
            |line: u32, e: rppal::gpio::Error| GpioError::Line { line, name: "BCM pin".into(), reason: e.to_string() };
        let mut inputs = Vec::new();
        for (button, line) in &lines.buttons {
            let pin = gpio.get(u8::try_from(*line).unwrap_or(u8::MAX)).map_err(|e| pin_err(*line, e))?;
            let mut pin = if active_low { pin.into_input_pullup() } else { pin.into_input_pulldown() };
            let (button, tx) = (*button, edges.clone());
            pin.set_async_interrupt(Trigger::Both, Some(debounce), move |ev| {
                let high = ev.trigger == Trigger::RisingEdge;
                let _ = tx.try_send(Edge { button, pressed: high != active_low, at: Instant::now() });
            })
            .map_err(|e| pin_err(*line, e))?;
            inputs.push(pin);
        }
        let mut outputs = Vec::new();
        for (output, line) in &lines.outputs {
            let pin = gpio.get(u8::try_from(*line).unwrap_or(u8::MAX)).map_err(|e| pin_err(*line, e))?;
            outputs.push((*output, pin.into_output_low()));
        }
        Ok(PiGpio { _inputs: inputs, outputs })
    }
}

impl GpioBackend for PiGpio {
    fn name(&self) -> &'static str {
        GpioKind::Rppal.as_str()
    }

    fn set(&mut self, output: Output, on: bool) -> Result<(), GpioError> {
        if let Some((_, pin)) = self.outputs.iter_mut().find(|(o, _)| *o == output) {
            if on { pin.set_high() } else { pin.set_low() }
        }
        Ok(())
    }
}
