#!/bin/sh
# The architecture as a check (make test runs it): what each crate may depend on.
# - callbox (the shipped binary) never pulls in the fault lab or the benchmark program;
# - callbox-core (the sans-IO cores) none of the runtime, HTTP, GStreamer, GPIO or TLS crates.
#   rustls is denied as a direct dependency only: the sans-IO `rtc` crate runs its DTLS on
#   rustls' types (no socket, no clock), so it reaches core through `rtc`, never through core.
set -eu
cd "$(dirname "$0")/.."
fail=0
deny() { # crate, regex of denied packages[, extra cargo tree options]
    found=$(cargo tree --locked --offline -p "$1" -e normal ${3:-} --prefix none --format '{p}' 2>/dev/null \
        | awk '{print $1}' | sort -u | grep -E "^($2)\$" || true)
    if [ -n "$found" ]; then
        echo "check-layers: $1 depends on what it must not:" $found >&2
        fail=1
    fi
}
deny callbox 'callbox-faultnet|callbox-bench'
if cargo metadata --no-deps --format-version 1 --offline | grep -q '"name":"callbox-core"'; then
    deny callbox-core 'tokio|axum|hyper|hyper-util|gstreamer|rppal|gpiocdev|tokio-rustls|tungstenite|tokio-tungstenite|callbox'
    deny callbox-core 'rustls' '--depth 1'
fi
[ $fail -eq 0 ] && echo "check-layers: ok"
exit $fail
