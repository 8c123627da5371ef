#!/bin/bash
# allscope provisioning for a fresh Raspberry Pi OS (Bookworm) or JetPack (Ubuntu) image.
#
#   sudo firmware_config/install.sh [options]            on the device, from a checkout of the repository
#   sudo firmware_config/install.sh --root /mnt/img      into a mounted image or a temporary root
#
# Options
#   --root DIR             install below DIR instead of / (no systemctl/udevadm calls on the running system;
#                          units are enabled with `systemctl --root`, users written with `systemd-sysusers --root`)
#   --prefix DIR           where allscope lives on the target (default /opt/allscope: the venv, the model,
#                          the kiosk launcher)
#   --role ROLE            device (default), central or both: which units are enabled (all are installed)
#   --kiosk-user NAME      the desktop user whose session shows the kiosk (default: the user with UID 1000
#                          in DIR/etc/passwd, if any); --no-kiosk installs no kiosk unit
#   --with-broker          also install the mosquitto configuration template and ACL (central broker host)
#   --no-packages          do not install the Debian packages allscope needs (the PDF report's fonts, the
#                          kiosk's on-screen keyboard squeekboard)
#   --no-venv              do not create/upgrade the venv (it is never built with --root: it must be built on
#                          the target, its scripts hold absolute paths and its wheels match the target's CPU)
#   --system-site-packages give the venv the system's packages (Jetson: JetPack's OpenCV with GStreamer)
#   --no-enable            install the units but enable none
#   --dry-run              print what would change and change nothing
#
# Idempotent: every file is written only when its content or mode differs, existing configuration and keys
# are never overwritten, and a second run reports "unchanged" for every step and modifies nothing.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROOT=/
PREFIX=/opt/allscope
ROLE=device
KIOSK_USER=""
KIOSK=auto
BROKER=no
VENV=yes
PACKAGES=yes
SYSTEM_SITE=no
ENABLE=yes
DRY=no
SERVICE_USER=allscope
CHANGES=0

die() { echo "install.sh: $*" >&2; exit 2; }
say() { printf '  %-9s %s\n' "$1" "$2"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --root=*) ROOT="${1#*=}"; shift ;;
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift 2 ;;
        --prefix=*) PREFIX="${1#*=}"; shift ;;
        --role) ROLE="${2:?--role needs device, central or both}"; shift 2 ;;
        --role=*) ROLE="${1#*=}"; shift ;;
        --kiosk-user) KIOSK_USER="${2:?--kiosk-user needs a name}"; KIOSK=yes; shift 2 ;;
        --kiosk-user=*) KIOSK_USER="${1#*=}"; KIOSK=yes; shift ;;
        --no-kiosk) KIOSK=no; shift ;;
        --with-broker) BROKER=yes; shift ;;
        --no-venv) VENV=no; shift ;;
        --no-packages) PACKAGES=no; shift ;;
        --system-site-packages) SYSTEM_SITE=yes; shift ;;
        --no-enable) ENABLE=no; shift ;;
        --dry-run) DRY=yes; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
case "$ROLE" in device|central|both) ;; *) die "--role must be device, central or both (got '$ROLE')" ;; esac
# The central needs the PostgreSQL driver (allscope[central] = allscope[device] + psycopg2).
EXTRA=device; [ "$ROLE" = device ] || EXTRA=central
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path (got '$PREFIX')" ;; esac
ROOT="$(cd "$ROOT" 2>/dev/null && pwd)" || die "--root: no such directory"
R="${ROOT%/}"  # prefix for paths on the target: "" when installing on this system
if [ "$DRY" = no ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo): it creates a system user, chowns the data directory and installs units; --dry-run shows the steps"
fi

# --- helpers -----------------------------------------------------------------------------------------------

changed() {  # changed VERB WHAT: count a change and report it ("would VERB" in a dry run)
    CHANGES=$((CHANGES + 1))
    if [ "$DRY" = yes ]; then say would "$1 $2"; else say "$1" "$2"; fi
}

lookup_id() {  # lookup_id passwd|group NAME -> numeric id on the target, empty if absent
    if [ "$2" = root ]; then echo 0; return 0; fi
    [ -f "$R/etc/$1" ] || return 0
    awk -F: -v name="$2" '$1 == name { print $3; exit }' "$R/etc/$1"
}

ensure_dir() {  # ensure_dir PATH MODE OWNER GROUP   (PATH as on the target)
    local path="$R$1" mode="$2" owner="$3" group="$4" uid gid new=no
    if [ ! -d "$path" ]; then
        changed created "$1/ ($mode $owner:$group)"
        [ "$DRY" = yes ] && return 0
        mkdir -p "$path"
        new=yes
    fi
    uid="$(lookup_id passwd "$owner")"; gid="$(lookup_id group "$group")"
    if [ -z "$uid" ] || [ -z "$gid" ]; then
        [ "$DRY" = yes ] && return 0
        die "no user $owner / group $group on the target for $1"
    fi
    if [ "$(stat -c '%a %u %g' "$path")" != "${mode#0} $uid $gid" ]; then
        [ "$new" = yes ] || changed fixed "$1/ (now $mode $owner:$group)"
        [ "$DRY" = yes ] && return 0
        chown "$uid:$gid" "$path"
        chmod "$mode" "$path"
    fi
}

put_file() {  # put_file SOURCE TARGET_PATH MODE [keep]   content from SOURCE ("-": stdin); keep: never overwrite
    local source="$1" dest="$R$2" mode="$3" keep="${4:-}" tmp
    tmp="$(mktemp)"
    if [ "$source" = - ]; then cat >"$tmp"; else cat "$source" >"$tmp"; fi
    if [ -e "$dest" ] && [ "$keep" = keep ]; then
        say kept "$2 (exists; not overwritten)"
    elif [ -e "$dest" ] && cmp -s "$tmp" "$dest" && [ "$(stat -c '%a' "$dest")" = "${mode#0}" ]; then
        say unchanged "$2"
    else
        changed "$([ -e "$dest" ] && echo updated || echo created)" "$2"
        if [ "$DRY" = no ]; then
            mkdir -p "$(dirname "$dest")"
            install -m "$mode" -o 0 -g 0 "$tmp" "$dest.allscope-tmp"
            mv -f "$dest.allscope-tmp" "$dest"  # a rename: the file is complete or absent, never half-written
        fi
    fi
    rm -f "$tmp"
}

render_unit() {  # the unit text with the install-time placeholders filled in
    sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@KIOSK_USER@|$KIOSK_USER|g" -e "s|@KIOSK_UID@|${KIOSK_UID:-}|g" "$1"
}

# --- steps -------------------------------------------------------------------------------------------------

# The kiosk's desktop user, checked before anything is changed.
if [ "$KIOSK" != no ] && [ -z "$KIOSK_USER" ] && [ -f "$R/etc/passwd" ]; then
    KIOSK_USER="$(awk -F: '$3 == 1000 { print $1; exit }' "$R/etc/passwd")"
fi
KIOSK_UID=""
[ -n "$KIOSK_USER" ] && KIOSK_UID="$(lookup_id passwd "$KIOSK_USER")"
if [ "$KIOSK" = yes ] && [ -z "$KIOSK_UID" ]; then
    die "--kiosk-user $KIOSK_USER: no such user on the target"
fi


echo "allscope install: source $SRC, target ${ROOT}, prefix $PREFIX, role $ROLE$([ "$DRY" = yes ] && echo ', dry run')"

echo "service user"
put_file - /etc/sysusers.d/allscope.conf 0644 <<EOF
# allscope service user (systemd-sysusers); written by firmware_config/install.sh
u $SERVICE_USER - "allscope appliance" /var/lib/allscope
# cameras (video) and the Coral Edge TPU (plugdev, firmware_config/udev/99-coral-edgetpu.rules)
m $SERVICE_USER video
m $SERVICE_USER plugdev
EOF
in_group() { [ -f "$R/etc/group" ] && awk -F: -v g="$1" -v u="$SERVICE_USER" \
    '$1 == g { n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) found = 1 } END { exit !found }' "$R/etc/group"; }
if [ -n "$(lookup_id passwd "$SERVICE_USER")" ] && in_group video && in_group plugdev; then
    say unchanged "user $SERVICE_USER (groups video, plugdev)"
else
    changed created "user $SERVICE_USER (system user, groups video, plugdev)"
    if [ "$DRY" = no ]; then
        if command -v systemd-sysusers >/dev/null; then
            systemd-sysusers --root="$ROOT" "$R/etc/sysusers.d/allscope.conf" >/dev/null
        elif [ "$ROOT" = / ]; then
            getent group "$SERVICE_USER" >/dev/null || groupadd --system "$SERVICE_USER"
            id "$SERVICE_USER" >/dev/null 2>&1 || useradd --system --gid "$SERVICE_USER" --home-dir /var/lib/allscope \
                --no-create-home --shell /usr/sbin/nologin --comment "allscope appliance" "$SERVICE_USER"
            for g in video plugdev; do getent group "$g" >/dev/null || groupadd --system "$g"; done
            usermod -a -G video,plugdev "$SERVICE_USER"
        else
            die "systemd-sysusers is needed to create the user below --root"
        fi
    fi
fi

echo "directories"
ensure_dir /etc/allscope 0755 root root
ensure_dir /var/lib/allscope 0750 "$SERVICE_USER" "$SERVICE_USER"

echo "configuration and secrets"
if [ -f "$SRC/firmware_config/allscope.example.toml" ]; then
    put_file "$SRC/firmware_config/allscope.example.toml" /etc/allscope/allscope.toml 0644 keep
else
    say skipped "/etc/allscope/allscope.toml (no firmware_config/allscope.example.toml in $SRC)"
fi
# The at-rest key: 32 random bytes as 64 hex digits, root-only; systemd hands it to the services as the
# credential allscope-db-key (LoadCredential=). Never regenerated: a new key cannot read the old data.
# Same format as `allscope storage init-key`.
if [ -e "$R/etc/allscope/db.key" ]; then
    say kept "/etc/allscope/db.key (exists; never regenerated)"
else
    put_file <(od -An -tx1 -N32 /dev/urandom | tr -d ' \n'; echo) /etc/allscope/db.key 0600 keep
fi

echo "Debian packages"
# install_debs WHAT PACKAGE...: the packages not installed yet, with apt-get on the running target only.
install_debs() {
    local what="$1"; shift
    local debs=("$@") missing=() deb
    for deb in "${debs[@]}"; do
        dpkg-query --admindir="$R/var/lib/dpkg" -W -f='${Status}' "$deb" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$deb")
    done
    if [ "${#missing[@]}" = 0 ]; then
        say unchanged "${debs[*]}"
    elif [ "$PACKAGES" = no ]; then
        say skipped "${missing[*]} (--no-packages)"
    elif [ "$ROOT" != / ]; then
        say skipped "${missing[*]}: install them on the target (apt-get install ${missing[*]})"
    elif ! command -v apt-get >/dev/null; then
        say skipped "${missing[*]}: no apt-get here; install $what with this system's package manager"
    else
        changed installed "${missing[*]}"
        if [ "$DRY" = no ]; then
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        fi
    fi
}
# The PDF report's fonts, so a patient's name prints in any script a clinic meets (DejaVu: Latin, Greek,
# Cyrillic, Hebrew, Arabic; Noto: Arabic, Indic scripts, Thai, ...; WenQuanYi Micro Hei: Chinese, Japanese,
# Korean); device/services/pdf_fonts.py lists the files it looks for. The Makefile's system-deps installs them too.
install_debs "the same fonts" fonts-dejavu-core fonts-noto-core fonts-wqy-microhei
# The kiosk's on-screen keyboard: squeekboard, Raspberry Pi OS Bookworm's own (Wayland: labwc or wayfire),
# shown when a text field gets the focus (the kiosk launcher starts Chromium with --enable-wayland-ime;
# `sudo raspi-config nonint do_squeekboard S2` makes it appear whenever a touchscreen is present).
if [ "$ROLE" != central ] && [ "$KIOSK" != no ] && [ -n "$KIOSK_UID" ]; then
    install_debs "an on-screen keyboard" squeekboard
else
    say skipped "squeekboard (no kiosk on this target)"
fi

echo "program files"
put_file "$SRC/models/allscope_blast_int8.tflite" "$PREFIX/models/allscope_blast_int8.tflite" 0644
put_file "$SRC/firmware_config/raspberry-pi/allscope-kiosk.sh" "$PREFIX/libexec/allscope-kiosk" 0755
if [ "$VENV" = no ]; then
    say skipped "venv (--no-venv)"
elif [ "$ROOT" != / ]; then
    say skipped "venv in $PREFIX with allscope[$EXTRA]: build it on the target (rerun install.sh there, or in a chroot of the image)"
else
    stamp="$PREFIX/.allscope-installed"
    want="$( (git -C "$SRC" describe --always --dirty 2>/dev/null || sed -n 's/^version = //p' "$SRC/pyproject.toml") | head -1)"
    if [ -x "$PREFIX/bin/allscope" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want $EXTRA" ]; then
        say unchanged "venv $PREFIX (allscope[$EXTRA] $want)"
    else
        changed installed "venv $PREFIX with allscope[$EXTRA] $want"
        if [ "$DRY" = no ]; then
            [ -x "$PREFIX/bin/python" ] || python3 -m venv $([ "$SYSTEM_SITE" = yes ] && echo --system-site-packages) "$PREFIX"
            "$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
            rm -rf "$SRC/build"  # a stale build/lib would put files deleted from the tree back into the wheel
            "$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check "$SRC[$EXTRA]"
            echo "$want $EXTRA" >"$stamp"
        fi
    fi
fi

echo "systemd units"
units=()
for unit in "$SRC"/systemd/allscope-*.service "$SRC"/systemd/allscope-*.timer; do
    name="$(basename "$unit")"
    if [ "$name" = allscope-kiosk.service ] && { [ "$KIOSK" = no ] || [ -z "$KIOSK_UID" ]; }; then
        say skipped "$name (no desktop user: --kiosk-user NAME, or a user with UID 1000)"
        continue
    fi
    put_file <(render_unit "$unit") "/etc/systemd/system/$name" 0644
    units+=("$name")
done

echo "udev"
put_file "$SRC/firmware_config/udev/99-coral-edgetpu.rules" /etc/udev/rules.d/99-coral-edgetpu.rules 0644

if [ "$BROKER" = yes ]; then
    echo "broker (mosquitto)"
    put_file "$SRC/firmware_config/mosquitto/allscope.conf.template" /etc/allscope/mosquitto/allscope.conf.template 0644
    put_file "$SRC/firmware_config/mosquitto/acl" /etc/allscope/mosquitto/acl 0644
fi

echo "enable"
enable=()
has_unit() { local u; for u in "${units[@]}"; do [ "$u" = "$1" ] && return 0; done; return 1; }
if [ "$ROLE" != central ]; then
    for u in allscope-device.service allscope-sync.service allscope-backup.timer allscope-kiosk.service; do
        has_unit "$u" && enable+=("$u")
    done
fi
if [ "$ROLE" != device ]; then enable+=(allscope-central.service allscope-central-web.service); fi
if [ "$ENABLE" = no ]; then
    say skipped "enabling ${enable[*]} (--no-enable)"
else
    systemctl=(systemctl)
    if [ "$ROOT" != / ]; then
        systemctl=(systemctl --root="$ROOT")  # offline: only the symlinks, nothing is started
    elif [ "$DRY" = no ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
    for u in "${enable[@]}"; do
        if "${systemctl[@]}" is-enabled --quiet "$u" 2>/dev/null; then
            say unchanged "$u enabled"
        else
            changed enabled "$u"
            [ "$DRY" = yes ] || "${systemctl[@]}" enable --quiet "$u" 2>/dev/null
        fi
    done
fi
if [ "$ROOT" = / ] && [ "$DRY" = no ] && [ "$CHANGES" -gt 0 ] && command -v udevadm >/dev/null \
        && [ -d /run/udev ]; then
    udevadm control --reload-rules || true
fi

echo
if [ "$CHANGES" = 0 ]; then
    echo "allscope install: nothing to change"
else
    echo "allscope install: $CHANGES change(s)$([ "$DRY" = yes ] && echo ' (dry run: none made)')"
fi
if [ "$DRY" = no ] && [ "$ROOT" = / ] && [ "$CHANGES" -gt 0 ]; then
    cat <<EOF
Next: review /etc/allscope/allscope.toml (allscope config check), append
firmware_config/raspberry-pi/config.txt.fragment to /boot/firmware/config.txt where needed, then
  systemctl start allscope-device      (first run: open http://127.0.0.1:8080/setup on the touchscreen)
  allscope doctor
To sync: sudo -u allscope $PREFIX/bin/allscope device enrol BUNDLE && systemctl start allscope-sync
EOF
fi
