//! `callbox peer`: a scriptable room member for tests and field checks. It logs in with a
//! token, the app secret (AppSign) or, with `--dev`, the dev app's public secret, optionally publishes a test pattern and tone, plays
//! every other stream, and prints one JSON line per event on stdout: `user`, `stream`,
//! `first_frame`, `video_stall`, `video_resume`, `quality` (frames and audio buffers decoded per played stream),
//! `publish_quality` (estimate, players' cap, encoder target, picture), `video_adapted`, `state`,
//! `call`, `network` (each user's upstream and downstream level), `stream_state` (a stream's
//! camera or microphone switched). With `--answer` it is a desk that answers every ring instead of a room member.
//! It stops after `--seconds` or when stdin closes, logging out first. Lines on stdin switch
//! its media: `camera on|off`, `mic on|off`, `speaker on|off`.

use std::process::ExitCode;
use std::time::Duration;

use callbox::engine::{
    Auth, CallPhase, Capability, Engine, EngineEvent, EngineProfile, MediaEventKind, PublishChannel, RoomConfig,
    UpdateType, UserInfo,
};
use callbox::media::MediaConfig;
use serde_json::json;

/// Arguments of `callbox peer`.
#[derive(clap::Args)]
pub struct PeerArgs {
    /// Server URL (wss://host, or ws://host:port on a LAN).
    #[arg(long)]
    server: String,
    /// A private CA (PEM) for the server's certificate (default: the system's roots).
    #[arg(long)]
    ca_file: Option<std::path::PathBuf>,
    /// Room to join.
    #[arg(long, default_value = "lobby")]
    room: String,
    /// Our user ID.
    #[arg(long, default_value = "peer")]
    user: String,
    /// AppID.
    #[arg(long, default_value_t = callbox::server::DEV_APP_ID)]
    app_id: u32,
    /// A token from the app's backend.
    #[arg(long, conflicts_with_all = ["secret", "dev"])]
    token: Option<String>,
    /// AppSign: the app secret (64 hex), better given in the environment.
    #[arg(long, env = "CALLBOX_APP_SECRET", hide_env_values = true, conflicts_with = "dev")]
    secret: Option<String>,
    /// AppSign with the dev app's public secret (a server started with `--dev`).
    #[arg(long)]
    dev: bool,
    /// Publish a test pattern and tone as this stream.
    #[arg(long)]
    publish: Option<String>,
    /// The published video: `WIDTHxHEIGHT@FPS` (default 320x240@15).
    #[arg(long)]
    video: Option<String>,
    /// The published video's (maximum) bitrate, kbit/s.
    #[arg(long)]
    bitrate_kbps: Option<u32>,
    /// The test pattern: `ball`, `smpte`, or `snow` (does not compress: fills the bitrate).
    #[arg(long)]
    pattern: Option<String>,
    /// Hold the bitrate and picture fixed instead of following the link.
    #[arg(long)]
    fixed_rate: bool,
    /// No loss repair (no NACK/RTX, FlexFEC or Opus in-band FEC), to compare.
    #[arg(long)]
    no_repair: bool,
    /// Publish audio only, as a station without a camera.
    #[arg(long)]
    no_camera: bool,
    /// Media bind address.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Stop after this many seconds (0: when stdin closes).
    #[arg(long, default_value_t = 0)]
    seconds: u64,
    /// Act as a desk that answers calls: say `answer` at login, play nothing of the room,
    /// answer every ring at once, then publish (`--publish`) and play the caller's streams
    /// until the call ends. Prints `call` lines (`incoming`, `answered`, `ended` with the
    /// reason).
    #[arg(long)]
    answer: bool,
}

fn out(v: serde_json::Value) {
    println!("{v}");
}

/// A switch read from stdin; a `switch` line says what was done or why not.
async fn switch(engine: &Engine, line: &str) {
    let r = match line.split_once(' ') {
        Some(("camera", v @ ("on" | "off"))) => engine.enable_camera(v == "on").await,
        Some(("mic", v @ ("on" | "off"))) => engine.mute_microphone(v == "off").await,
        Some(("speaker", v @ ("on" | "off"))) => engine.mute_speaker(v == "off").await,
        _ if line.is_empty() => return,
        _ => {
            out(json!({"event": "switch", "line": line, "error": "camera|mic|speaker on|off"}));
            return;
        }
    };
    out(json!({"event": "switch", "line": line, "ok": r.is_ok()}));
}

/// `callbox peer`.
pub fn run(a: PeerArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(peer(a))
}

async fn peer(a: PeerArgs) -> anyhow::Result<ExitCode> {
    let auth = match (a.token, a.secret, a.dev) {
        (Some(t), _, _) => Auth::Token(t),
        (None, Some(s), _) => Auth::AppSign(s),
        (None, None, true) => Auth::AppSign(callbox::server::DEV_SECRET.into()),
        (None, None, false) => {
            anyhow::bail!("say how to log in: --token, --secret (or CALLBOX_APP_SECRET), or --dev for a --dev server")
        }
    };
    let mut media = MediaConfig::small();
    if let Some(v) = &a.video {
        let bad = || anyhow::anyhow!("--video {v:?}: expected WIDTHxHEIGHT@FPS, like 640x480@30");
        let (size, fps) = v.split_once('@').ok_or_else(bad)?;
        let (w, h) = size.split_once('x').ok_or_else(bad)?;
        (media.width, media.height, media.fps) = (w.parse()?, h.parse()?, fps.parse()?);
    }
    if let Some(b) = a.bitrate_kbps {
        media.bitrate_kbps = b;
    }
    if let Some(pat) = &a.pattern {
        media.test_pattern = pat.clone();
    }
    media.adaptive = !a.fixed_rate;
    if a.no_camera {
        media.video = callbox::media::VideoSource::None;
    }
    media.repair = !a.no_repair;
    media.min_bitrate_kbps = media.min_bitrate_kbps.min(media.bitrate_kbps);
    media.validate().map_err(|e| anyhow::anyhow!(e))?;
    let mut p = EngineProfile::new(a.app_id, auth, a.server.clone()).with_media(media);
    p.ca_file = a.ca_file.clone();
    if let Some(m) = &mut p.media {
        m.bind = Some(a.bind);
    }
    let (engine, mut events) = Engine::create(p)?;
    let mut user = UserInfo::new(a.user.clone(), a.user.clone());
    if a.answer {
        user.caps = vec![Capability::Answer, Capability::Display];
    }
    engine.login_room(&a.room, user, RoomConfig { token: None, is_user_status_notify: true }).await?;
    out(json!({"event": "state", "state": "Connected"}));
    if let Some(s) = a.publish.as_ref().filter(|_| !a.answer) {
        engine.start_publishing_stream(s, PublishChannel::Main).await?;
    }
    // --answer: the streams of each user, and whom we are in a call with.
    let mut by_user: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut peer: Option<(u64, String)> = None;
    // stdin: one switch per line (`camera on|off`, `mic on|off`, `speaker on|off`); its end
    // stops the peer unless `--seconds` does.
    let (cmd_tx, mut cmds) = tokio::sync::mpsc::channel::<String>(16);
    let until_eof = a.seconds == 0;
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if cmd_tx.send(l).await.is_err() {
                return;
            }
        }
    });
    let stop = async {
        if a.seconds > 0 {
            tokio::time::sleep(Duration::from_secs(a.seconds)).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            c = cmds.recv() => match c {
                None if until_eof => break,
                None => cmds = tokio::sync::mpsc::channel(1).1,
                Some(line) => switch(&engine, line.trim()).await,
            },
            e = events.recv() => match e {
                None => break,
                Some(EngineEvent::RoomUserUpdate { update, users, .. }) => {
                    for u in users {
                        out(json!({"event": "user", "update": if update == UpdateType::Add { "add" } else { "delete" }, "user_id": u.user_id}));
                    }
                }
                Some(EngineEvent::NetworkQuality { user_id, is_local, upstream, downstream, .. }) => {
                    out(json!({"event": "network", "user_id": user_id, "local": is_local, "upstream": upstream.as_str(), "downstream": downstream.as_str()}));
                }
                Some(EngineEvent::RemoteCameraStateUpdate { stream_id, state, .. }) => {
                    out(json!({"event": "stream_state", "stream_id": stream_id, "video": state.as_str()}));
                }
                Some(EngineEvent::RemoteMicStateUpdate { stream_id, state, .. }) => {
                    out(json!({"event": "stream_state", "stream_id": stream_id, "audio": state.as_str()}));
                }
                Some(EngineEvent::RoomStreamUpdate { update, streams, .. }) => {
                    for s in streams {
                        let add = update == UpdateType::Add;
                        out(json!({"event": "stream", "update": if add { "add" } else { "delete" }, "stream_id": s.stream_id, "user_id": s.user.user_id, "video": s.video.as_str(), "audio": s.audio.as_str()}));
                        let list = by_user.entry(s.user.user_id.clone()).or_default();
                        list.retain(|x| *x != s.stream_id);
                        if add {
                            list.push(s.stream_id.clone());
                        }
                        if a.answer && peer.as_ref().is_none_or(|(_, p)| *p != s.user.user_id) {
                            continue;
                        }
                        let r = if add { engine.start_playing_stream(&s.stream_id).await } else { engine.stop_playing_stream(&s.stream_id).await };
                        if let Err(e) = r {
                            out(json!({"event": "error", "message": e.to_string()}));
                        }
                    }
                }
                Some(EngineEvent::MediaEvent { stream_id, event: MediaEventKind::RenderedFirstFrame }) => {
                    out(json!({"event": "first_frame", "stream_id": stream_id}));
                }
                Some(EngineEvent::MediaEvent { stream_id, event: e @ (MediaEventKind::VideoStall | MediaEventKind::VideoResume) }) => {
                    let kind = if e == MediaEventKind::VideoStall { "video_stall" } else { "video_resume" };
                    out(json!({"event": kind, "stream_id": stream_id}));
                }
                Some(EngineEvent::PlayerQualityUpdate { stream_id, quality }) => {
                    out(json!({"event": "quality", "stream_id": stream_id, "frames_decoded": quality.frames_decoded,
                        "audio_decoded": quality.audio_decoded, "render_fps": quality.render_fps, "path": quality.path,
                        "receive_fps": quality.receive_fps, "video_kbps": quality.video_kbps, "stall_ms": quality.stall_ms,
                        "stall_count": quality.stall_count, "video_retransmitted": quality.video_retransmitted,
                        "video_fec_rebuilt": quality.video_fec_rebuilt, "video_lost": quality.video_lost,
                        "audio_lost": quality.audio_lost, "audio_concealed": quality.audio_concealed,
                        "video_frames": quality.video_frames, "video_frames_intact": quality.video_frames_intact,
                        "video_freezes": quality.video_freezes}));
                }
                Some(EngineEvent::PublisherQualityUpdate { stream_id, quality: q }) => {
                    out(json!({"event": "publish_quality", "stream_id": stream_id, "estimate_kbps": q.estimate_kbps,
                        "cap_kbps": q.cap_kbps, "target_kbps": q.target_kbps, "video_kbps": q.video_kbps,
                        "send_fps": q.send_fps, "width": q.width, "height": q.height, "fps": q.fps,
                        "retransmitted": q.retransmitted, "audio_fec_percent": q.audio_fec_percent}));
                }
                Some(EngineEvent::PublisherVideoAdapted { stream_id, rate, reason }) => {
                    out(json!({"event": "video_adapted", "stream_id": stream_id, "width": rate.width,
                        "height": rate.height, "fps": rate.fps, "bitrate_kbps": rate.kbps, "reason": reason}));
                }
                Some(EngineEvent::CallIncoming { call_id, caller, .. }) => {
                    out(json!({"event": "call", "state": "incoming", "call_id": call_id, "peer": caller.user_id}));
                    if a.answer && peer.is_none() {
                        match engine.answer_call(call_id).await {
                            Ok(()) => {
                                out(json!({"event": "call", "state": "answered", "call_id": call_id, "peer": caller.user_id}));
                                if let Some(s) = &a.publish
                                    && let Err(e) = engine.start_publishing_stream(s, PublishChannel::Main).await
                                {
                                    out(json!({"event": "error", "message": e.to_string()}));
                                }
                                for s in by_user.get(&caller.user_id).cloned().unwrap_or_default() {
                                    let _ = engine.start_playing_stream(&s).await;
                                }
                                peer = Some((call_id, caller.user_id));
                            }
                            Err(e) => out(json!({"event": "error", "message": e.to_string()})),
                        }
                    }
                }
                Some(EngineEvent::CallStateUpdate { call_id, state, peer: who, reason, .. }) => {
                    let st = serde_json::to_value(state).unwrap_or_default();
                    out(json!({"event": "call", "state": st, "call_id": call_id, "peer": who.user_id, "reason": reason.name()}));
                    if state == CallPhase::Ended && peer.as_ref().is_some_and(|(id, _)| *id == call_id) {
                        if let Some((_, p)) = peer.take() {
                            for s in by_user.get(&p).cloned().unwrap_or_default() {
                                let _ = engine.stop_playing_stream(&s).await;
                            }
                        }
                        if a.publish.is_some() {
                            let _ = engine.stop_publishing_stream(PublishChannel::Main).await;
                        }
                    }
                }
                Some(EngineEvent::RoomStateChanged { state, reason, .. }) => {
                    out(json!({"event": "state", "state": format!("{state:?}"), "reason": format!("{reason:?}")}));
                }
                Some(_) => {}
            }
        }
    }
    engine.destroy().await;
    Ok(ExitCode::SUCCESS)
}
