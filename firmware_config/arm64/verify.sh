#!/bin/bash
# allscope on arm64, checked on an x86_64 Debian/Ubuntu host under qemu-user emulation (`make arm64-check`).
#
#   sudo firmware_config/arm64/verify.sh [--root DIR] [--host-python PY] [--frames N] [--mirror URL] [--reuse]
#
# 1. an arm64 Debian bookworm root made by debootstrap in DIR (default /var/tmp/allscope-arm64root; reused when
#    it is already there; never inside the repository), run through qemu-aarch64 registered with binfmt_misc;
# 2. a clean `git clone` of this repository's HEAD inside it (committed files only) and `make run`'s install
#    step there (`make .venv/.device-installed`: python3 -m venv, then pip install -e '.[device]' from PyPI,
#    aarch64 wheels); the wheel tags of what pip installed are printed;
# 3. `allscope analyze --json` on the bundled demo frames, plus N (default 3) crowded ALL-IDB1 frames (the
#    bench's Im052_1, Im048_1, Im060_1, ...) when the data set is at $ALLSCOPE_DATA or ../shared/data, both in the
#    arm64 root and on the host (PY, default .venv/bin/python, else python3; run in the same clone, so the same
#    code, and both with the shipped model: $ALLSCOPE_MODEL is not passed on);
# 4. firmware_config/arm64/compare_analyze.py: cells, boxes, labels, flags and p_blast of the two;
# 5. firmware_config/arm64/kernels.py: the int8 model on the same prepared cells (made on the host) on both, with
#    XNNPACK, the built-in kernels and the reference kernels, to tell the model's kernels from the image steps.
# --reuse keeps the clone and venv of an earlier run in the root, moved to this HEAD (make reinstalls only when
# pyproject.toml changed): minutes instead of a fresh install's ten.
#
# Needs root (debootstrap, chroot, mounts), debootstrap, qemu-user-static and binfmt-support (installed with
# apt-get when missing) and access to the Debian mirror and PyPI. Takes long: the first debootstrap and pip
# install under emulation are tens of minutes on a small machine. Results and logs go to DIR/allscope-check/.
# Emulation proves the install and the results on the arm64 instruction set, nothing about a Pi's speed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROOT=/var/tmp/allscope-arm64root
HOST_PY=""
NFRAMES=3
MIRROR=""
REUSE=no
die() { echo "arm64 check: $*" >&2; exit 2; }
step() { printf '\n== %s\n' "$*"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT="${2:?--root needs a directory}"; shift 2 ;;
        --host-python) HOST_PY="${2:?--host-python needs a path}"; shift 2 ;;
        --frames) NFRAMES="${2:?--frames needs a number}"; shift 2 ;;
        --mirror) MIRROR="${2:?--mirror needs a URL}"; shift 2 ;;
        --reuse) REUSE=yes; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and mounts need it)"
case "$ROOT" in /*) ;; *) die "--root must be an absolute path (got '$ROOT')" ;; esac
case "$ROOT/" in "$REPO"/*) die "--root must be outside the repository ($REPO)" ;; esac
[[ "$NFRAMES" =~ ^[0-9]+$ ]] || die "--frames must be a number (got '$NFRAMES')"
if [ -z "$HOST_PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then HOST_PY="$REPO/.venv/bin/python"; else HOST_PY=python3; fi
fi
# absolute: the host's analyze runs in the clone
case "$HOST_PY" in */*) HOST_PY="$(cd "$(dirname "$HOST_PY")" && pwd)/$(basename "$HOST_PY")" ;; esac
"$HOST_PY" -c 'import cv2, numpy' 2>/dev/null || die "$HOST_PY lacks the device extra (make .venv/.device-installed)"
if [ -z "$MIRROR" ]; then
    MIRROR="$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p; s/^deb  *\(\[[^]]*\]  *\)\{0,1\}\(http[^ ]*\) .*/\2/p' \
        /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | grep -v security | head -1 || true)"
    [ -n "$MIRROR" ] || MIRROR=http://deb.debian.org/debian
fi

step "tools"
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
[ -x /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
command -v update-binfmts >/dev/null || missing+=(binfmt-support)
if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || die "binfmt_misc cannot be mounted here (a container without it?)"
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "qemu-aarch64 is not enabled in binfmt_misc"
echo "qemu-aarch64 registered ($(sed -n 's/^flags: //p' /proc/sys/fs/binfmt_misc/qemu-aarch64)), mirror $MIRROR"

step "arm64 root $ROOT"
if [ -x "$ROOT/usr/bin/python3" ] && [ -x "$ROOT/usr/bin/make" ] && [ -x "$ROOT/usr/bin/git" ]; then
    echo "reused (remove it to start from scratch)"
else
    start=$SECONDS
    debootstrap --arch=arm64 --variant=minbase \
        --include=python3,python3-venv,python3-pip,make,git,ca-certificates bookworm "$ROOT" "$MIRROR"
    echo "debootstrap: $((SECONDS - start)) s"
fi
echo "uname -m in the root: $(chroot "$ROOT" uname -m); $(chroot "$ROOT" python3 --version)"

OUT="$ROOT/allscope-check"
SRC=/opt/allscope-src
mounted=()
cleanup() { local m; for m in "${mounted[@]}"; do umount -l "$m" 2>/dev/null || true; done; }
trap cleanup EXIT
for m in proc dev; do
    if ! mountpoint -q "$ROOT/$m"; then
        if [ "$m" = proc ]; then mount -t proc proc "$ROOT/proc"; else mount --bind /dev "$ROOT/dev"; fi
        mounted=("$ROOT/$m" "${mounted[@]}")
    fi
done
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# Certificates this host trusts beyond Debian's (e.g. a TLS-inspecting proxy's CA) are trusted in the root too,
# and pip there uses the system bundle (its own certifi bundle would not hold them); proxy settings pass through.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null \
        && ! diff -rq /usr/local/share/ca-certificates "$ROOT/usr/local/share/ca-certificates" >/dev/null 2>&1; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    chroot "$ROOT" update-ca-certificates >/dev/null 2>&1  # minutes under emulation: only when they changed
fi
CHROOT_ENV=(HOME=/root PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -z "${!v:-}" ] || CHROOT_ENV+=("$v=${!v}")
done
rm -rf "$OUT" && mkdir -p "$OUT"

if [ "$REUSE" = yes ] && [ -f "$ROOT$SRC/.venv/.device-installed" ]; then
    step "the clone in $SRC moved to $(git -C "$REPO" rev-parse --short HEAD) (--reuse; committed files only)"
    git -C "$ROOT$SRC" fetch --quiet "$REPO" HEAD && git -C "$ROOT$SRC" reset --quiet --hard FETCH_HEAD
else
    step "clean clone of $(git -C "$REPO" rev-parse --short HEAD) into $SRC (committed files only)"
    rm -rf "${ROOT:?}$SRC"
    git clone --quiet --no-local "$REPO" "$ROOT$SRC"
fi
frames=()
for f in "$ROOT$SRC"/device/demo/*.jpg; do frames+=("device/demo/$(basename "$f")"); done
DATA="${ALLSCOPE_DATA:-$REPO/../shared/data}"
if [ "$NFRAMES" -gt 0 ] && [ -d "$DATA/all-idb1" ]; then
    mkdir -p "$ROOT$SRC/arm64-frames"
    # ALL-IDB1's crowded frames (the bench's Im052_1 with 30 cells, Im048_1, Im060_1), then others
    for name in Im052_1 Im048_1 Im060_1 Im034_0 Im039_0 Im079_0 Im090_0 Im108_0; do
        [ "${#frames[@]}" -lt $((4 + NFRAMES)) ] || break
        [ -f "$DATA/all-idb1/$name.jpg" ] || continue
        cp "$DATA/all-idb1/$name.jpg" "$ROOT$SRC/arm64-frames/"
        frames+=("arm64-frames/$name.jpg")
    done
fi
echo "frames: ${frames[*]}"

step "make run's install step in the arm64 root (make .venv/.device-installed)"
start=$SECONDS
chroot "$ROOT" /usr/bin/env -i "${CHROOT_ENV[@]}" bash -c "cd $SRC && make .venv/.device-installed" 2>&1 \
    | tee "$OUT/install.log" || die "make .venv/.device-installed failed in the arm64 root (log: $OUT/install.log)"
install_s=$((SECONDS - start))
echo "install: $install_s s under emulation"
# Which distributions came as wheels, and for which platform (the WHEEL file's Tag lines).
chroot "$ROOT" bash -c "cd $SRC/.venv/lib/python3*/site-packages && for d in *.dist-info; do
    printf '%s %s\n' \"\${d%.dist-info}\" \"\$(sed -n 's/^Tag: //p' \$d/WHEEL 2>/dev/null | tr '\n' ' ')\"; done" \
    | tee "$OUT/wheels.txt"

step "allscope analyze --json: arm64 (emulated)"
start=$SECONDS
chroot "$ROOT" /usr/bin/env -i "${CHROOT_ENV[@]}" bash -c "cd $SRC && .venv/bin/allscope analyze --json ${frames[*]}" \
    >"$OUT/arm64.json" 2>"$OUT/arm64.err" || { cat "$OUT/arm64.err" >&2; die "analyze failed in the arm64 root"; }
analyze_s=$((SECONDS - start))
echo "analyze: $analyze_s s under emulation for ${#frames[@]} frames (including start-up)"

step "allscope analyze --json: host $(uname -m) ($HOST_PY)"
(cd "$ROOT$SRC" && env -u ALLSCOPE_MODEL "$HOST_PY" -m device.cli analyze --json "${frames[@]}") \
    >"$OUT/host.json" 2>"$OUT/host.err" \
    || { cat "$OUT/host.err" >&2; die "analyze failed on the host"; }

step "compare (reference: host)"
python3 "$REPO/firmware_config/arm64/compare_analyze.py" --json "$OUT/host.json" "$OUT/arm64.json" \
    >"$OUT/compare.json" || true
status=0
python3 "$REPO/firmware_config/arm64/compare_analyze.py" "$OUT/host.json" "$OUT/arm64.json" | tee "$OUT/compare.txt" \
    || status=$?

step "the int8 model on the same prepared cells, three kernel sets (raw outputs, steps of 1/256)"
(cd "$ROOT$SRC" && env -u ALLSCOPE_MODEL "$HOST_PY" -m firmware_config.arm64.kernels prepare "${frames[@]}" \
    --out "$OUT/cells.npz") 2>/dev/null
(cd "$ROOT$SRC" && env -u ALLSCOPE_MODEL "$HOST_PY" -m firmware_config.arm64.kernels run "$OUT/cells.npz") \
    >"$OUT/kernels-host.json" 2>/dev/null
chroot "$ROOT" /usr/bin/env -i "${CHROOT_ENV[@]}" bash -c \
    "cd $SRC && .venv/bin/python -m firmware_config.arm64.kernels run /allscope-check/cells.npz" \
    >"$OUT/kernels-arm64.json" 2>/dev/null
(cd "$ROOT$SRC" && "$HOST_PY" -m firmware_config.arm64.kernels compare "$OUT/kernels-host.json" \
    "$OUT/kernels-arm64.json") | grep '^all frames' | tee "$OUT/kernels.txt"
echo "install $install_s s, analyze $analyze_s s (emulated); outputs in $OUT"
exit "$status"
