#!/usr/bin/env python3
"""Writes docs/openapi.json, the OpenAPI 3.1 description of callbox server's admin API.

The server serves the same file at /api/v1/openapi.json (include_str!); tests/hooks.rs checks
that every admin route of the router is in it. Edit here, run, commit both."""
import json, pathlib

def err(desc):
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}

def ok(desc, schema):
    return {"description": desc, "content": {"application/json": {"schema": schema}}}

ref = lambda n: {"$ref": f"#/components/schemas/{n}"}
p = lambda name, desc: {"name": name, "in": "path", "required": True, "description": desc, "schema": {"type": "string"}}
APP, ROOM, USER = p("app_id", "The AppID."), p("room_id", "The room."), p("user_id", "The user.")
AUTH = {"401": err("No bearer token, or it does not check out (ADMIN_UNAUTHORIZED)"),
        "403": err("The token lacks admin, or is limited to another room (ADMIN_FORBIDDEN)")}

spec = {
    "openapi": "3.1.0",
    "info": {
        "title": "callbox server admin API",
        "version": "1",
        "description": "Rooms, users, doors, snapshots and device keys of a callbox server. Every request "
        "carries `Authorization: Bearer <token>`: a token of the app with the `admin` privilege "
        "(`callbox token --privileges admin --user '*'`), limited to one room when the token names one. "
        "Errors are JSON `{code, name, message}` with the stable callbox code (docs/protocol.md). "
        "Bodies above 64 KiB are refused with 413 (BODY_TOO_LARGE).",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["code", "name", "message"], "properties": {
                "code": {"type": "integer", "description": "The callbox error code."},
                "name": {"type": "string", "description": "Its constant name, e.g. DOOR_NO_ANSWER."},
                "message": {"type": "string"}}},
            "RoomSummary": {"type": "object", "properties": {
                "room_id": {"type": "string"}, "user_count": {"type": "integer"}, "stream_count": {"type": "integer"}}},
            "User": {"type": "object", "properties": {
                "user_id": {"type": "string"}, "user_name": {"type": "string"},
                "connected": {"type": "boolean", "description": "False during the grace period after a cut."},
                "quality": {"type": "string", "enum": ["excellent", "good", "medium", "bad", "die", "unknown"]}}},
            "Stream": {"type": "object", "description": "A published stream (the protocol's StreamInfo).", "properties": {
                "stream_id": {"type": "string"}, "user": {"type": "object"}, "extra_info": {"type": "string"},
                "video": {"type": "string", "enum": ["on", "off", "absent"]},
                "audio": {"type": "string", "enum": ["on", "off", "absent"]}}},
            "Room": {"type": "object", "properties": {
                "room_id": {"type": "string"}, "users": {"type": "array", "items": ref("User")},
                "streams": {"type": "array", "items": ref("Stream")}}},
            "DeviceKey": {"type": "object", "properties": {
                "id": {"type": "string"}, "app_id": {"type": "integer"}, "user_id": {"type": "string"},
                "room_id": {"type": ["string", "null"]}, "privileges": {"type": "array", "items": {"type": "string"}},
                "created": {"type": "integer", "description": "Unix seconds."}}},
            "NewDeviceKey": {"type": "object", "required": ["user_id"], "properties": {
                "user_id": {"type": "string"}, "room_id": {"type": "string"},
                "privileges": {"type": "array", "items": {"type": "string", "enum": ["login", "publish", "play", "door"]}}}},
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/api/v1/apps/{app_id}/rooms": {"get": {
            "operationId": "listRooms", "summary": "The app's rooms with user and stream counts.", "parameters": [APP],
            "responses": {"200": ok("The rooms", {"type": "object", "properties": {
                "app_id": {"type": "integer"}, "rooms": {"type": "array", "items": ref("RoomSummary")}}}),
                **AUTH, "404": err("No such app (ADMIN_NOT_FOUND)")}}},
        "/api/v1/apps/{app_id}/rooms/{room_id}": {"get": {
            "operationId": "getRoom", "summary": "A room's users and streams.", "parameters": [APP, ROOM],
            "responses": {"200": ok("The room", ref("Room")), **AUTH, "404": err("No such room")}}},
        "/api/v1/apps/{app_id}/rooms/{room_id}/users/{user_id}": {"delete": {
            "operationId": "kickUser", "summary": "Ends the user's session (KICKED_BY_ADMIN).", "parameters": [APP, ROOM, USER],
            "responses": {"200": ok("Kicked", {"type": "object", "properties": {
                "kicked": {"type": "boolean"}, "room_id": {"type": "string"}, "user_id": {"type": "string"}}}),
                **AUTH, "404": err("No such user in the room")}}},
        "/api/v1/apps/{app_id}/rooms/{room_id}/users/{user_id}/door": {"post": {
            "operationId": "openDoor",
            "summary": "Opens that door station's door (no call needed); answered once the station confirms.",
            "parameters": [APP, ROOM, p("user_id", "The door station's user.")],
            "responses": {"200": ok("The station pulsed its relay", {"type": "object", "properties": {
                "opened": {"type": "boolean"}, "room_id": {"type": "string"}, "user_id": {"type": "string"}}}),
                **AUTH, "404": err("The user is not in the room"),
                "409": err("The station refused, with its reason (DOOR_RELAY_FAULT, DOOR_REFUSED), or it has no door (DOOR_NOT_A_DOOR)"),
                "429": err("Too many door requests waiting (RATE_LIMITED)"),
                "504": err("No answer within 4 s (DOOR_NO_ANSWER), or the station is not connected (DOOR_OFFLINE)")}}},
        "/api/v1/apps/{app_id}/rooms/{room_id}/streams/{stream_id}/snapshot.jpg": {"get": {
            "operationId": "snapshot",
            "summary": "A JPEG of the stream's latest keyframe. An admin token for the room, or a token with play for the stream.",
            "parameters": [APP, ROOM, p("stream_id", "The stream.")],
            "responses": {"200": {"description": "The picture; `X-Callbox-Size: <w>x<h>`",
                                  "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}},
                          "401": err("No bearer token, or it does not check out"),
                          "403": err("Neither admin for the room nor play for the stream"),
                          "404": err("The stream is not published in the room (STREAM_NOT_FOUND)"),
                          "429": err("Snapshots are being decoded (RATE_LIMITED); retry"),
                          "503": err("No keyframe yet (the publisher was asked for one; retry), or no media relay")}}},
        "/api/v1/apps/{app_id}/device-keys": {
            "post": {"operationId": "createDeviceKey", "summary": "A device key, shown this once.", "parameters": [APP],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": ref("NewDeviceKey")}}},
                     "responses": {"201": ok("The key", {"allOf": [ref("DeviceKey"), {"type": "object", "properties": {"key": {"type": "string"}}}]}),
                                   "400": err("A bad body (ADMIN_BAD_REQUEST)"), **AUTH}},
            "get": {"operationId": "listDeviceKeys", "summary": "The app's device keys, without secrets.", "parameters": [APP],
                    "responses": {"200": ok("The keys", {"type": "object", "properties": {
                        "app_id": {"type": "integer"}, "device_keys": {"type": "array", "items": ref("DeviceKey")}}}), **AUTH}}},
        "/api/v1/apps/{app_id}/device-keys/{id}": {"delete": {
            "operationId": "revokeDeviceKey", "summary": "Revokes the key and ends its sessions.",
            "parameters": [APP, p("id", "The key's ID.")],
            "responses": {"200": ok("Revoked", {"type": "object", "properties": {
                "revoked": {"type": "boolean"}, "id": {"type": "string"}, "sessions_ended": {"type": "integer"}}}),
                **AUTH, "404": err("No such device key")}}},
        "/api/v1/token": {"post": {
            "operationId": "deviceToken", "summary": "A short-lived token for a device key (the key is the bearer).",
            "responses": {"200": ok("The token", {"type": "object", "properties": {
                "token": {"type": "string"}, "expires_in": {"type": "integer"}, "app_id": {"type": "integer"},
                "user_id": {"type": "string"}, "room_id": {"type": "string"}}}),
                "401": err("Unknown, malformed or revoked key (DEVICE_KEY_INVALID, DEVICE_KEY_REVOKED)")}}},
        "/api/v1/openapi.json": {"get": {"operationId": "openapi", "summary": "This description.", "security": [],
                                         "responses": {"200": {"description": "OpenAPI 3.1 JSON"}}}},
        "/healthz": {"get": {"operationId": "health", "summary": "Liveness, version and media ports.", "security": [],
                             "responses": {"200": ok("Up", {"type": "object"})}}},
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus text: sessions, errors, media, webhooks.",
                             "security": [], "responses": {"200": {"description": "text/plain; version=0.0.4"}}}},
    },
}
out = pathlib.Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
out.write_text(json.dumps(spec, indent=2) + "\n")
print(f"wrote {out}")
