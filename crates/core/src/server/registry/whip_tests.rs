//! WHIP and WHEP through the registry: admission, resources, the relay's answers, probes.

use super::*;

fn whip_token(w: &World, user: &str) -> String {
    w.token(1, user, &["login", "publish"], 3600)
}

#[test]
fn a_whip_publisher_is_admitted_like_a_login_and_leaves_with_its_last_stream() {
    let mut w = World::new(90);
    w.login(1, "flat", "lobby", true);
    let token = whip_token(&w, "cam");
    let first = w.http_offer(MediaRole::Publish, "lobby", "cam-1", &token, Ok("answer")).unwrap();
    assert!(first.starts_with("/whip/v1/1/lobby/cam-1/"), "{first}");
    let msgs = w.take(1);
    assert_eq!(user_updates(&msgs), vec![(UpdateType::Add, "cam".into(), ErrorCode::OK)]);
    assert_eq!(stream_updates(&msgs), vec![(UpdateType::Add, "cam-1".into(), ErrorCode::OK)]);
    // A second stream of the same user joins the same session.
    let second = w.http_offer(MediaRole::Publish, "lobby", "cam-2", &token, Ok("answer")).unwrap();
    assert_eq!(user_updates(&w.take(1)), vec![], "the user is already there");
    assert_eq!(w.http_end(MediaRole::Publish, &first), Ok(HttpAnswer::Ended));
    let msgs = w.take(1);
    assert_eq!(stream_updates(&msgs), vec![(UpdateType::Delete, "cam-1".into(), ErrorCode::OK)]);
    assert_eq!(user_updates(&msgs), vec![], "its other stream keeps the user in the room");
    assert!(
        w.media.contains(&MediaOut::EndSession(media_session(MediaRole::Publish, first.rsplit('/').next().unwrap())))
    );
    assert_eq!(w.http_end(MediaRole::Publish, &second), Ok(HttpAnswer::Ended));
    assert_eq!(user_updates(&w.take(1)), vec![(UpdateType::Delete, "cam".into(), ErrorCode::USER_LOGGED_OUT)]);
    assert_eq!(w.http_end(MediaRole::Publish, &second).unwrap_err().kind, RefusalKind::NotFound, "ended once");
    w.reg.check_invariants().unwrap();
}

#[test]
fn a_whip_stream_of_a_logged_in_user_joins_its_session_and_a_full_room_refuses_a_new_one() {
    let mut w = World::new(90);
    let mut cfg: RegistryConfig = toml::from_str("").unwrap();
    cfg.apps = vec![AppConfig::new(1, SECRET)];
    cfg.limits.max_users_per_room = 2;
    w.reg = Registry::new(&cfg, w.now.at);
    w.login(1, "door", "lobby", true);
    w.login(2, "flat", "lobby", true);
    let door = whip_token(&w, "door");
    let loc = w.http_offer(MediaRole::Publish, "lobby", "door-cam", &door, Ok("answer")).unwrap();
    assert_eq!(user_updates(&w.take(2)), vec![], "the door is logged in already");
    let other = whip_token(&w, "cam");
    let full = w.http_offer(MediaRole::Publish, "lobby", "cam", &other, Ok("answer")).unwrap_err();
    assert_eq!((full.kind, full.code), (RefusalKind::Forbidden, ErrorCode::ROOM_FULL));
    w.http_end(MediaRole::Publish, &loc).unwrap();
    assert_eq!(stream_updates(&w.take(2)), vec![(UpdateType::Delete, "door-cam".into(), ErrorCode::OK)]);
    assert!(w.reg.room_view(1, "lobby").unwrap().users.iter().any(|u| u.user_id == "door"), "the door stays");
    // Its signalling session unpublishing the stream ends the WHIP resource with it.
    let loc = w.http_offer(MediaRole::Publish, "lobby", "door-cam", &door, Ok("answer")).unwrap();
    w.msg(1, ClientMsg::Unpublish { req: 9, stream_id: "door-cam".into() });
    assert_eq!(w.http_end(MediaRole::Publish, &loc).unwrap_err().kind, RefusalKind::NotFound);
    w.reg.check_invariants().unwrap();
}

#[test]
fn a_refused_offer_ends_its_resource_and_refusals_have_kinds() {
    let mut w = World::new(90);
    w.login(1, "flat", "lobby", true);
    let token = whip_token(&w, "cam");
    let bad = w.http_offer(MediaRole::Publish, "lobby", "cam", &token, Err(OfferFailure::Rejected("no video".into())));
    assert_eq!(bad.unwrap_err().kind, RefusalKind::Invalid);
    let msgs = w.take(1);
    assert_eq!(stream_updates(&msgs).last().map(|u| u.0), Some(UpdateType::Delete), "the stream went again");
    assert_eq!(user_updates(&msgs).last().map(|u| u.0), Some(UpdateType::Delete), "and its user");
    let down =
        w.http_offer(MediaRole::Publish, "lobby", "cam", &token, Err(OfferFailure::Unavailable("stopped".into())));
    assert_eq!(down.unwrap_err().kind, RefusalKind::Unavailable);
    let kind = |r: Result<String, Refusal>| r.map_err(|e| (e.kind, e.code)).unwrap_err();
    let star = w.token(1, "*", &["login", "publish"], 3600);
    assert_eq!(kind(w.http_offer(MediaRole::Publish, "lobby", "cam", &star, Ok("answer"))).0, RefusalKind::Forbidden);
    let no_login = w.token(1, "cam", &["publish"], 3600);
    assert_eq!(
        kind(w.http_offer(MediaRole::Publish, "lobby", "cam", &no_login, Ok("answer"))),
        (RefusalKind::Forbidden, ErrorCode::NO_LOGIN_PRIVILEGE)
    );
    assert_eq!(
        kind(w.http_offer(MediaRole::Publish, "lobby", "cam", "garbage", Ok("answer"))).0,
        RefusalKind::Unauthenticated
    );
    w.http_offer(MediaRole::Publish, "lobby", "cam", &token, Ok("answer")).unwrap();
    let taken = w.token(1, "other", &["login", "publish"], 3600);
    assert_eq!(
        kind(w.http_offer(MediaRole::Publish, "lobby", "cam", &taken, Ok("answer"))),
        (RefusalKind::Conflict, ErrorCode::STREAM_ID_IN_USE)
    );
    assert_eq!(w.reg.metrics.inconsistencies, 0);
    w.reg.check_invariants().unwrap();
}

#[test]
fn offers_are_budgeted_per_app_and_garbage_does_not_spend_the_budget() {
    let mut w = World::new(90);
    for _ in 0..50 {
        let r = w.http_offer(MediaRole::Publish, "lobby", "cam", "garbage", Ok("answer"));
        assert_eq!(r.unwrap_err().kind, RefusalKind::Unauthenticated);
    }
    let mut made = 0;
    let refused = loop {
        let token = whip_token(&w, &format!("cam-{made}"));
        match w.http_offer(MediaRole::Publish, "lobby", &format!("cam-{made}"), &token, Ok("answer")) {
            Ok(_) => made += 1,
            Err(r) => break r,
        }
    };
    assert_eq!(
        (made, refused.kind, refused.code),
        (20, RefusalKind::RateLimited, ErrorCode::RATE_LIMITED),
        "the burst"
    );
}

#[test]
fn a_whep_player_needs_the_stream_and_ends_with_it_or_when_its_media_goes() {
    let mut w = World::new(90);
    let play = w.token(1, "viewer", &["play"], 3600);
    let none = w.http_offer(MediaRole::Play, "lobby", "cam", &play, Ok("answer")).unwrap_err();
    assert_eq!((none.kind, none.code), (RefusalKind::NotFound, ErrorCode::STREAM_NOT_FOUND));
    w.login(1, "door", "lobby", false);
    w.msg(1, ClientMsg::publish(2, "cam", String::new()));
    let loc = w.http_offer(MediaRole::Play, "lobby", "cam", &play, Ok("answer")).unwrap();
    assert!(loc.starts_with("/whep/v1/1/lobby/cam/"), "{loc}");
    assert_eq!(w.http_end(MediaRole::Publish, &loc).unwrap_err().kind, RefusalKind::NotFound, "not a WHIP resource");
    w.msg(1, ClientMsg::Unpublish { req: 3, stream_id: "cam".into() });
    assert_eq!(w.http_end(MediaRole::Play, &loc).unwrap_err().kind, RefusalKind::NotFound, "ended with the stream");
    // A player whose media goes away is probed after REAP_AFTER and ended.
    w.msg(1, ClientMsg::publish(4, "cam", String::new()));
    let loc = w.http_offer(MediaRole::Play, "lobby", "cam", &play, Ok("answer")).unwrap();
    let session = media_session(MediaRole::Play, loc.rsplit('/').next().unwrap());
    w.media.clear();
    w.advance(REAP_AFTER);
    w.advance(Duration::from_secs(2));
    assert!(w.media.contains(&MediaOut::Probe(session.clone())), "{:?}", w.media);
    w.reg.handle_media_gone(&session);
    w.pump();
    assert!(w.media.contains(&MediaOut::EndSession(session)));
    assert_eq!(w.http_end(MediaRole::Play, &loc).unwrap_err().kind, RefusalKind::NotFound);
    w.reg.check_invariants().unwrap();
}

#[test]
fn a_whip_publisher_whose_media_goes_away_leaves_the_room() {
    let mut w = World::new(1000);
    w.login(1, "flat", "lobby", true);
    let token = whip_token(&w, "cam");
    let loc = w.http_offer(MediaRole::Publish, "lobby", "cam", &token, Ok("answer")).unwrap();
    w.take(1);
    let session = media_session(MediaRole::Publish, loc.rsplit('/').next().unwrap());
    // A pinned session has no heartbeat: long silence alone does not end it.
    w.advance(Duration::from_secs(200));
    assert!(w.media.contains(&MediaOut::Probe(session.clone())));
    assert_eq!(user_updates(&w.take(1)), vec![]);
    w.reg.handle_media_gone(&session);
    w.pump();
    assert_eq!(user_updates(&w.take(1)), vec![(UpdateType::Delete, "cam".into(), ErrorCode::USER_LOGGED_OUT)]);
    w.reg.handle_media_gone(&session);
    w.reg.handle_media_gone("not-a-resource");
    w.pump();
    assert_eq!(w.reg.metrics.inconsistencies, 0);
    w.reg.check_invariants().unwrap();
}
