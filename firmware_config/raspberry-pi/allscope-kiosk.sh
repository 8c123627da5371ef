#!/bin/bash
# allscope kiosk launcher (installed as PREFIX/libexec/allscope-kiosk, run by allscope-kiosk.service as the
# desktop user). Waits for the desktop session (Wayland or X11) and for the local web UI, then replaces
# itself with Chromium in kiosk mode. Exits 1 when either does not come up in time: systemd retries.
# On Wayland Chromium talks to the input method, so the on-screen keyboard (squeekboard, installed by
# install.sh) opens when a text field gets the focus and closes when it loses it.
set -eu

URL="${ALLSCOPE_KIOSK_URL:-http://127.0.0.1:8080/}"
WAIT_S="${ALLSCOPE_KIOSK_WAIT_S:-120}"
: "${XDG_RUNTIME_DIR:=/run/user/$(id -u)}"
export XDG_RUNTIME_DIR

browser=""
for candidate in chromium-browser chromium; do  # Raspberry Pi OS names it chromium-browser, Debian chromium
    if command -v "$candidate" >/dev/null 2>&1; then browser="$(command -v "$candidate")"; break; fi
done
if [ -z "$browser" ]; then
    echo "allscope-kiosk: no chromium found (apt install chromium-browser, or chromium)" >&2
    exit 1
fi

find_display() {
    local socket
    for socket in "$XDG_RUNTIME_DIR"/wayland-[0-9]; do  # labwc: wayland-0, wayfire: wayland-1
        if [ -S "$socket" ]; then export WAYLAND_DISPLAY="${socket##*/}"; platform=wayland; return 0; fi
    done
    if [ -S /tmp/.X11-unix/X0 ]; then export DISPLAY="${DISPLAY:-:0}"; platform=x11; return 0; fi
    return 1
}

# host and port of the URL, for a plain TCP probe (bash's /dev/tcp: no curl needed)
hostport="${URL#*://}"; hostport="${hostport%%/*}"
host="${hostport%:*}"; port="${hostport##*:}"
[ "$port" = "$hostport" ] && port=80

platform=""
for _ in $(seq "$WAIT_S"); do
    if [ -z "$platform" ]; then find_display || true; fi
    if [ -n "$platform" ] && (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
        profile="$XDG_RUNTIME_DIR/allscope-kiosk"  # tmpfs: nothing written to the SD card, gone at logout
        mkdir -p "$profile"
        echo "allscope-kiosk: $browser on $platform showing $URL"
        exec "$browser" --kiosk "$URL" \
            --ozone-platform="$platform" \
            --user-data-dir="$profile" --incognito \
            --noerrdialogs --disable-infobars --no-first-run --disable-session-crashed-bubble \
            --disable-translate --disable-features=Translate,TranslateUI \
            --check-for-update-interval=31536000 --disable-background-networking \
            --disable-sync --disable-component-update --password-store=basic \
            --overscroll-history-navigation=0 --disable-pinch \
            $([ "$platform" = wayland ] && echo --enable-wayland-ime --wayland-text-input-version=3)
    fi
    sleep 1
done
if [ -z "$platform" ]; then
    echo "allscope-kiosk: no desktop session after ${WAIT_S} s (is desktop autologin on?)" >&2
else
    echo "allscope-kiosk: $URL does not answer after ${WAIT_S} s (systemctl status allscope-device)" >&2
fi
exit 1
