//! Which cameras and microphones a board has, from GStreamer's device monitor: only devices
//! that can capture (a V4L2 metadata, output or codec node is not listed as a source), with
//! the device string their source element opens. `auto` in the device config picks from
//! this list ([`AutoDevices::choose`]), and doctor prints it.

use gstreamer::prelude::*;

/// A capture device GStreamer found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Camera or microphone.
    pub kind: Kind,
    /// What the source element opens: `/dev/video0` for v4l2src, `hw:1` or `hw:1,0` for alsasrc.
    pub device: String,
    /// The name the driver gives it ("USB Camera", "Loopback").
    pub name: String,
    /// Up to four of its capture formats, `FORMAT WxH` (cameras) for doctor's listing.
    pub formats: Vec<String>,
}

/// The kind of a [`Found`] device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A V4L2 video capture device (v4l2src).
    Camera,
    /// An ALSA capture device (alsasrc).
    Microphone,
}

/// What `auto` resolves to: the first camera and microphone found, or none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoDevices {
    /// The camera's device node.
    pub camera: Option<Found>,
    /// The microphone's ALSA device.
    pub microphone: Option<Found>,
}

impl AutoDevices {
    /// Nothing found: `auto` means the test pattern and tone (config checks, tests).
    pub fn none() -> AutoDevices {
        AutoDevices::default()
    }

    /// The first camera and the first microphone in the monitor's order. A camera listing no
    /// raw or MJPEG format (a codec's capture side that only gives H.264) is passed over.
    pub fn choose(found: &[Found]) -> AutoDevices {
        let camera = found
            .iter()
            .find(|f| {
                f.kind == Kind::Camera
                    && (f.formats.is_empty() || f.formats.iter().any(|fmt| !fmt.starts_with("video/x-h26")))
            })
            .cloned();
        let microphone = found.iter().find(|f| f.kind == Kind::Microphone).cloned();
        AutoDevices { camera, microphone }
    }
}

/// The capture devices GStreamer's device monitor lists right now (empty when GStreamer does
/// not start). Only v4l2src and alsasrc devices: the daemon opens V4L2 and ALSA directly,
/// not through PipeWire or PulseAudio.
pub fn probe() -> Vec<Found> {
    if super::init().is_err() {
        return Vec::new();
    }
    let monitor = gstreamer::DeviceMonitor::new();
    monitor.add_filter(Some("Video/Source"), None);
    monitor.add_filter(Some("Audio/Source"), None);
    if monitor.start().is_err() {
        return Vec::new();
    }
    let found = monitor.devices().iter().filter_map(found).collect();
    monitor.stop();
    found
}

fn found(d: &gstreamer::Device) -> Option<Found> {
    let element = d.create_element(None).ok()?;
    let factory = element.factory()?.name();
    let kind = match factory.as_str() {
        "v4l2src" => Kind::Camera,
        "alsasrc" => Kind::Microphone,
        _ => return None,
    };
    let device = element.property::<Option<String>>("device")?;
    let formats = d
        .caps()
        .map(|c| {
            c.iter()
                .take(4)
                .map(|s| {
                    let fmt = s.get::<String>("format").unwrap_or_else(|_| s.name().to_string());
                    let w = s.get::<i32>("width").map(|w| w.to_string()).unwrap_or_default();
                    let h = s.get::<i32>("height").map(|h| h.to_string()).unwrap_or_default();
                    if kind == Kind::Camera { format!("{fmt} {w}x{h}") } else { fmt }
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Found { kind, device, name: d.display_name().to_string(), formats })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam(device: &str, formats: &[&str]) -> Found {
        Found {
            kind: Kind::Camera,
            device: device.into(),
            name: "cam".into(),
            formats: formats.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn mic(device: &str) -> Found {
        Found { kind: Kind::Microphone, device: device.into(), name: "mic".into(), formats: vec![] }
    }

    #[test]
    fn auto_takes_the_first_camera_that_gives_pictures_and_the_first_microphone() {
        let found = [
            mic("hw:1"),
            cam("/dev/video10", &["video/x-h264 1920x1080"]),
            cam("/dev/video2", &["YUY2 640x480", "image/jpeg 1280x720"]),
            cam("/dev/video4", &["YUY2 640x480"]),
            mic("hw:2"),
        ];
        let auto = AutoDevices::choose(&found);
        assert_eq!(auto.camera.unwrap().device, "/dev/video2");
        assert_eq!(auto.microphone.unwrap().device, "hw:1");
    }

    #[test]
    fn nothing_found_is_none() {
        assert_eq!(AutoDevices::choose(&[]), AutoDevices::none());
        let only_mic = AutoDevices::choose(&[mic("hw:0")]);
        assert!(only_mic.camera.is_none() && only_mic.microphone.is_some());
    }
}
