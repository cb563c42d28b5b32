//! The application's media controls, as the supervisor keeps them: camera and microphone
//! (what published streams send, and what the room is told of them), speaker and volume
//! (what played streams sound like), each played stream's own audio, video and volume, the
//! tracks each stream in the room has, and the sound level reports. Pure state: the
//! supervisor turns a change into runner commands.

use std::collections::HashMap;
use std::time::Duration;

use crate::media::{AudioSource, Layout, MediaConfig, VideoSink, VideoSource};
use crate::proto::TrackState;

/// The most a volume may be set to, percent (twice the stream's own level).
pub const MAX_VOLUME: u32 = 200;
/// Sound level reports come at most this often.
pub const MIN_SOUND_LEVEL_INTERVAL: Duration = Duration::from_millis(100);

/// A media control of the application.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Camera on or off for every published stream (off: no frame is encoded or sent).
    Camera(bool),
    /// Microphone on or off for every published stream (off: silence is sent).
    Microphone(bool),
    /// Speaker on or off: every played stream's audio.
    Speaker(bool),
    /// The volume of every played stream, percent (0..=200; a stream's own volume wins).
    Volume(u32),
    /// One played stream's audio on or off.
    PlayAudio {
        /// The stream.
        stream: String,
        /// On.
        on: bool,
    },
    /// One played stream's video on or off (off: it is not decoded).
    PlayVideo {
        /// The stream.
        stream: String,
        /// On.
        on: bool,
    },
    /// One played stream's volume, percent (0..=200).
    PlayVolume {
        /// The stream.
        stream: String,
        /// Percent.
        volume: u32,
    },
    /// Sound level reports every `interval` (at least 100 ms); `None`: stop them.
    SoundLevel(Option<Duration>),
    /// The local preview on or off (a grid tile, or the single layout's display while no
    /// played stream is on it).
    Preview(bool),
}

/// One played stream's own controls (kept while it is not played, for the next play).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PlayControl {
    audio: bool,
    video: bool,
    volume: Option<u32>,
}

impl Default for PlayControl {
    fn default() -> Self {
        PlayControl { audio: true, video: true, volume: None }
    }
}

/// What a play pipeline is set to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlaySettings {
    /// Video decoded (false: dropped before the decoder).
    pub video: bool,
    /// Played audio's gain: 0.0 silent, 1.0 as received, 2.0 the most.
    pub gain: f64,
}

/// See the module docs.
#[derive(Debug)]
pub(super) struct Controls {
    has_camera: bool,
    has_microphone: bool,
    has_display: bool,
    pub(super) camera: bool,
    pub(super) microphone: bool,
    speaker: bool,
    volume: u32,
    plays: HashMap<String, PlayControl>,
    /// What the room said each stream sends: (video, audio).
    remote: HashMap<String, (TrackState, TrackState)>,
    pub(super) sound_every: Option<Duration>,
    pub(super) preview: bool,
    /// The single layout on a real display: one played stream at a time has the screen
    /// (the others play audio only), so two streams never open two full-screen sinks.
    one_screen: bool,
    /// Played streams, oldest first: the oldest has the screen.
    order: Vec<String>,
}

impl Controls {
    pub(super) fn new(cfg: &MediaConfig) -> Self {
        Controls {
            has_camera: cfg.video != VideoSource::None,
            has_microphone: cfg.audio != AudioSource::None,
            has_display: cfg.video_sink != VideoSink::None,
            camera: true,
            microphone: true,
            speaker: true,
            volume: 100,
            plays: HashMap::new(),
            remote: HashMap::new(),
            sound_every: None,
            preview: cfg.preview,
            one_screen: cfg.layout == Layout::Single
                && matches!(cfg.video_sink, VideoSink::Auto | VideoSink::Kms | VideoSink::Wayland),
            order: Vec::new(),
        }
    }

    /// The single layout's screen is shared this way (see `one_screen`).
    pub(super) fn one_screen(&self) -> bool {
        self.one_screen
    }

    /// The played stream on the single layout's screen, if any.
    pub(super) fn on_screen(&self) -> Option<&str> {
        self.order.iter().find(|s| self.has_video(s)).map(String::as_str).filter(|_| self.one_screen)
    }

    /// A played stream stops. Returns the stream that takes the screen over, if this one
    /// had it (its player must be rebuilt with a decoder).
    pub(super) fn stopped(&mut self, stream: &str) -> Option<String> {
        let had = self.on_screen() == Some(stream);
        self.order.retain(|s| s != stream);
        if had { self.on_screen().map(str::to_string) } else { None }
    }

    fn has_video(&self, stream: &str) -> bool {
        self.has_display && self.remote_video(stream) != TrackState::Absent
    }

    /// What published streams carry now: (video, audio).
    pub(super) fn local_tracks(&self) -> (TrackState, TrackState) {
        let track = |has: bool, on: bool| if has { TrackState::on(on) } else { TrackState::Absent };
        (track(self.has_camera, self.camera), track(self.has_microphone, self.microphone))
    }

    /// Applies `c`; returns the played streams whose settings it changes (`None`: it is
    /// not a play control).
    pub(super) fn apply(&mut self, c: Control) -> Option<Vec<String>> {
        let every = |s: &Self| Some(s.plays.keys().cloned().collect());
        match c {
            Control::Camera(on) => self.camera = on,
            Control::Microphone(on) => self.microphone = on,
            Control::Preview(on) => self.preview = on,
            Control::SoundLevel(every) => self.sound_every = every.map(|d| d.max(MIN_SOUND_LEVEL_INTERVAL)),
            Control::Speaker(on) => {
                self.speaker = on;
                return every(self);
            }
            Control::Volume(v) => {
                self.volume = v.min(MAX_VOLUME);
                return every(self);
            }
            Control::PlayAudio { stream, on } => {
                self.plays.entry(stream.clone()).or_default().audio = on;
                return Some(vec![stream]);
            }
            Control::PlayVideo { stream, on } => {
                self.plays.entry(stream.clone()).or_default().video = on;
                return Some(vec![stream]);
            }
            Control::PlayVolume { stream, volume } => {
                self.plays.entry(stream.clone()).or_default().volume = Some(volume.min(MAX_VOLUME));
                return Some(vec![stream]);
            }
        }
        None
    }

    /// A played stream starts: its controls are kept from before, or the defaults.
    pub(super) fn playing(&mut self, stream: &str) {
        self.plays.entry(stream.to_string()).or_default();
        if !self.order.iter().any(|s| s == stream) {
            self.order.push(stream.to_string());
        }
    }

    /// The room says what stream `stream` sends.
    pub(super) fn set_remote(&mut self, stream: &str, video: TrackState, audio: TrackState) {
        self.remote.insert(stream.to_string(), (video, audio));
    }

    /// What the room said of the stream's video (`On` when it said nothing).
    pub(super) fn remote_video(&self, stream: &str) -> TrackState {
        self.remote.get(stream).map_or(TrackState::On, |t| t.0)
    }

    /// Whether a new play pipeline for `stream` builds a video decoder at all: not without
    /// a display, nor for a stream that has no video, nor (single layout on a real display)
    /// for a stream that does not have the screen.
    pub(super) fn decodes_video(&self, stream: &str) -> bool {
        self.has_video(stream) && (!self.one_screen || self.on_screen() == Some(stream))
    }

    /// Whether `stream`'s video is expected to render now (decoded, switched on here and at
    /// its publisher): only then is a missing picture a stall.
    pub(super) fn expects_video(&self, stream: &str) -> bool {
        self.decodes_video(stream)
            && self.plays.get(stream).is_none_or(|p| p.video)
            && self.remote_video(stream) == TrackState::On
    }

    /// What `stream`'s play pipeline is set to.
    pub(super) fn settings(&self, stream: &str) -> PlaySettings {
        let p = self.plays.get(stream).copied().unwrap_or_default();
        let volume = if self.speaker && p.audio { p.volume.unwrap_or(self.volume) } else { 0 };
        PlaySettings { video: p.video, gain: f64::from(volume) / 100.0 }
    }
}

/// A sound level for the application, 0..=100, from RMS dBFS: 0 at -60 dBFS and below
/// (silence, a muted microphone), 100 at full scale; speech is ~40-80.
pub fn sound_level(db: f32) -> f32 {
    ((db + 60.0) / 60.0 * 100.0).clamp(0.0, 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_combine_speaker_volume_and_each_stream() {
        let mut c = Controls::new(&MediaConfig::default());
        c.playing("a");
        c.playing("b");
        assert_eq!(c.settings("a"), PlaySettings { video: true, gain: 1.0 });
        let mut changed = c.apply(Control::Volume(150)).unwrap();
        changed.sort();
        assert_eq!(changed, ["a", "b"]);
        assert_eq!(c.apply(Control::PlayVolume { stream: "a".into(), volume: 900 }), Some(vec!["a".to_string()]));
        assert_eq!(c.settings("a").gain, 2.0, "capped at 200 %");
        assert_eq!(c.settings("b").gain, 1.5);
        c.apply(Control::Speaker(false));
        assert_eq!((c.settings("a").gain, c.settings("b").gain), (0.0, 0.0));
        c.apply(Control::Speaker(true));
        c.apply(Control::PlayAudio { stream: "b".into(), on: false });
        assert_eq!((c.settings("a").gain, c.settings("b").gain), (2.0, 0.0));
        c.apply(Control::PlayVideo { stream: "a".into(), on: false });
        assert!(!c.settings("a").video && !c.expects_video("a") && c.decodes_video("a"));
        assert_eq!(c.apply(Control::Camera(false)), None);
        assert_eq!(c.local_tracks(), (TrackState::Off, TrackState::On));
        c.apply(Control::SoundLevel(Some(Duration::from_millis(10))));
        assert_eq!(c.sound_every, Some(MIN_SOUND_LEVEL_INTERVAL));
    }

    #[test]
    fn what_a_stream_and_a_device_lack_is_not_decoded_nor_expected() {
        let cfg = MediaConfig { video: VideoSource::None, ..MediaConfig::default() };
        let mut c = Controls::new(&cfg);
        assert_eq!(c.local_tracks(), (TrackState::Absent, TrackState::On));
        c.set_remote("lift", TrackState::Absent, TrackState::On);
        c.set_remote("door", TrackState::Off, TrackState::On);
        assert!(!c.decodes_video("lift") && !c.expects_video("lift"));
        assert!(c.decodes_video("door") && !c.expects_video("door"), "camera off: may come back, not expected");
        assert!(c.expects_video("unknown"));
        let headless = Controls::new(&MediaConfig { video_sink: VideoSink::None, ..MediaConfig::default() });
        assert!(!headless.decodes_video("door"));
        assert_eq!(sound_level(-100.0), 0.0);
        // One screen: the oldest played stream that has video has it; the next takes over.
        let mut one = Controls::new(&MediaConfig { video_sink: VideoSink::Kms, ..MediaConfig::default() });
        assert!(one.one_screen());
        one.set_remote("lift", TrackState::Absent, TrackState::On);
        for s in ["lift", "door", "gate"] {
            one.playing(s);
        }
        assert_eq!(one.on_screen(), Some("door"), "an audio-only stream does not take the screen");
        assert!(one.decodes_video("door") && !one.decodes_video("gate") && !one.decodes_video("lift"));
        assert_eq!(one.stopped("lift"), None);
        assert_eq!(one.stopped("door"), Some("gate".to_string()));
        assert!(one.decodes_video("gate"));
        let grid =
            Controls::new(&MediaConfig { video_sink: VideoSink::Kms, layout: Layout::Grid, ..MediaConfig::default() });
        assert!(!grid.one_screen(), "the grid has a tile for each");
        assert_eq!(sound_level(0.0), 100.0);
        assert!((sound_level(-30.0) - 50.0).abs() < 1e-3);
    }
}
