//! The simulated backend: outputs are remembered (and shown by `callbox status`), buttons
//! are pressed by the daemon on `callbox gpio press` (see `device::daemon`).

use std::collections::BTreeMap;

use super::{GpioBackend, GpioError, GpioKind, Levels, Output};

/// Simulated GPIO.
#[derive(Debug, Default)]
pub struct SimGpio {
    levels: Levels,
}

impl SimGpio {
    /// All outputs off.
    pub fn new() -> Self {
        SimGpio { levels: Output::ALL.into_iter().map(|o| (o, false)).collect::<BTreeMap<_, _>>() }
    }
}

impl GpioBackend for SimGpio {
    fn name(&self) -> &'static str {
        GpioKind::Sim.as_str()
    }

    fn set(&mut self, output: Output, on: bool) -> Result<(), GpioError> {
        self.levels.insert(output, on);
        Ok(())
    }
}
