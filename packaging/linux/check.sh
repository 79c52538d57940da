#!/usr/bin/env bash
# Checks the Linux packages as a user meets them: the .deb's contents, then installed with
# `dpkg -i` (hearth --version, hearth inspect on a model, the window under Xvfb with a
# screenshot that must not be blank), then removed (every file it installed gone); and the
# AppImage (its type-2 magic, --version, inspect, the window).
#
# Usage: packaging/linux/check.sh HEARTH.deb HEARTH.AppImage MODEL.gguf OUT_DIR
#   OUT_DIR receives the screenshots (installed-window.png, appimage-window.png).
#
# Needs root (dpkg -i), Xvfb, xdotool and ImageMagick (`.ci/run` installs them), and
# desktop-file-utils and shared-mime-info for the desktop and MIME checks, and qemu-user to run
# the binary on emulated CPUs without AVX-512 (Haswell) and without AVX (Nehalem).
set -euo pipefail

die() {
    echo "check: FAILED: $*" >&2
    exit 1
}
say() {
    echo "check: $*"
}

[[ $# -eq 4 ]] || die "usage: $0 HEARTH.deb HEARTH.AppImage MODEL.gguf OUT_DIR"
deb=$(realpath "$1")
appimage=$(realpath "$2")
model=$(realpath "$3")
out=$4
mkdir -p "$out"
out=$(realpath "$out")
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo_root/Cargo.toml" | head -n 1)
[[ -n $version ]] || die "no version in Cargo.toml"
for tool in dpkg dpkg-deb Xvfb xdotool import convert; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# --- The .deb's contents -------------------------------------------------------------------
say "inspecting $(basename "$deb") ($(du -h "$deb" | cut -f1))"
dpkg-deb --field "$deb" Package | grep -qx hearth || die "the package is not called hearth"
dpkg-deb --field "$deb" Version | grep -qx "$version" || die "the package's version is not $version"
# Paths in a .deb are "./usr/..." or "usr/..." depending on the tool that made it.
dpkg-deb --contents "$deb" | awk '{ print $NF }' | sed -E 's|^\.?/?|/|' >"$work/contents"
for path in /usr/bin/hearth /usr/share/applications/hearth.desktop \
    /usr/share/mime/packages/hearth.xml /usr/share/doc/hearth/copyright; do
    grep -qx "$path" "$work/contents" || die "the .deb lacks $path"
done
for size in 16 24 32 48 64 128 256 512; do
    grep -qx "/usr/share/icons/hicolor/${size}x${size}/apps/hearth.png" "$work/contents" \
        || die "the .deb lacks the ${size}x${size} icon"
done
deb_file() { dpkg-deb --fsys-tarfile "$deb" | tar -xO --wildcards "*$1"; }
deb_file usr/share/applications/hearth.desktop >"$work/hearth.desktop"
for line in 'Exec=hearth %f' 'Icon=hearth' 'MimeType=application/x-gguf;' 'Type=Application'; do
    grep -qxF "$line" "$work/hearth.desktop" || die "the desktop file lacks '$line'"
done
if command -v desktop-file-validate >/dev/null; then
    desktop-file-validate "$work/hearth.desktop" || die "the desktop file is not valid"
fi
deb_file usr/share/mime/packages/hearth.xml | grep -q '<glob pattern="\*.gguf"/>' || die "the MIME entry does not claim *.gguf"

# --- The window, started from a binary: must draw something ---------------------------------
# window_check NAME COMMAND...: starts COMMAND MODEL under a fresh Xvfb, waits for the window,
# lets it draw, saves OUT_DIR/NAME.png and fails if the screen is blank.
window_check() {
    local name=$1
    shift
    # Xvfb picks a free display itself and writes its number once it is up (stale lock files or
    # sockets of earlier servers cannot collide), and does not reset when a client goes
    # (-noreset); then wait until it answers a client.
    local n="" fd="$work/xvfb-$name.display"
    Xvfb -displayfd 3 -noreset -screen 0 1280x800x24 -nolisten tcp 3>"$fd" >/dev/null 2>&1 &
    local xvfb=$!
    pids+=("$xvfb")
    for _ in $(seq 200); do
        n=$(tr -dc '0-9' <"$fd")
        [[ -n $n ]] && DISPLAY=":$n" xdotool getdisplaygeometry >/dev/null 2>&1 && break
        n=""
        sleep 0.1
    done
    [[ -n $n ]] || die "$name: Xvfb did not start"
    mkdir -p "$work/data-$name"
    DISPLAY=":$n" HEARTH_DATA_DIR="$work/data-$name" XDG_CACHE_HOME="$work/cache" \
        "$@" "$model" >"$work/$name.log" 2>&1 &
    local app=$!
    pids+=("$app")
    local id=""
    for _ in $(seq 300); do
        id=$(DISPLAY=":$n" xdotool search --onlyvisible --name '^Hearth$' 2>/dev/null | head -n 1 || true)
        [[ -n $id ]] && break
        kill -0 "$app" 2>/dev/null || { cat "$work/$name.log" >&2; die "$name: the app exited before its window opened"; }
        sleep 0.2
    done
    [[ -n $id ]] || die "$name: no Hearth window appeared in 60 s"
    # The model loads and the first frames are drawn.
    sleep 4
    DISPLAY=":$n" import -window root "$out/$name.png"
    local spread colours
    spread=$(convert "$out/$name.png" -format '%[fx:standard_deviation]' info:)
    colours=$(convert "$out/$name.png" -format '%k' info:)
    say "$name: window $id, screenshot $out/$name.png (pixel spread $spread, $colours colours)"
    awk -v s="$spread" -v c="$colours" 'BEGIN { exit !(s > 0.02 && c > 16) }' \
        || die "$name: the screenshot is blank"
    kill -0 "$app" 2>/dev/null || die "$name: the app died"
    kill "$app" "$xvfb" 2>/dev/null || true
    wait "$app" "$xvfb" 2>/dev/null || true
}

# --- Installed with dpkg -i -----------------------------------------------------------------
if dpkg -s hearth >/dev/null 2>&1; then
    say "removing an earlier hearth package"
    dpkg --purge hearth >/dev/null
fi
say "dpkg -i $(basename "$deb")"
dpkg -i "$deb" >/dev/null || die "dpkg -i failed"
dpkg -L hearth >"$work/installed"
[[ $(command -v hearth) == /usr/bin/hearth ]] || die "hearth is not /usr/bin/hearth on PATH"
got=$(/usr/bin/hearth --version)
[[ $got == "hearth $version" ]] || die "installed hearth --version says '$got', not 'hearth $version'"
say "installed: $got"
/usr/bin/hearth inspect "$model" >"$work/inspect.txt" || die "installed hearth inspect failed"
grep -q '^architecture' "$work/inspect.txt" || { cat "$work/inspect.txt" >&2; die "inspect printed no architecture"; }
say "installed: hearth inspect: $(grep -m1 '^architecture' "$work/inspect.txt")"
if command -v update-desktop-database >/dev/null; then
    grep -q 'application/x-gguf=hearth.desktop' /usr/share/applications/mimeinfo.cache \
        || die "the desktop database does not offer Hearth for application/x-gguf"
fi
if command -v update-mime-database >/dev/null; then
    [[ -f /usr/share/mime/application/x-gguf.xml ]] || die "the MIME database does not know application/x-gguf"
fi
# The shipped binary on older CPUs (qemu's user-mode emulation of their instruction sets): the
# engine must pick the kernels the CPU has, and answer exactly as the same level does natively.
if command -v qemu-x86_64 >/dev/null; then
    answer() { /usr/bin/hearth run -m "$model" -p "The capital of France is" -n 8 --temp 0 --backend cpu 2>/dev/null; }
    for cpu_level in Haswell-v4:avx2 Nehalem:scalar; do
        cpu=${cpu_level%%:*}
        level=${cpu_level##*:}
        want=$(HEARTH_CPU_LEVEL=$level answer)
        got=$(QEMU_CPU=$cpu qemu-x86_64 /usr/bin/hearth run -m "$model" -p "The capital of France is" \
            -n 8 --temp 0 --backend cpu 2>/dev/null) || die "installed hearth failed on an emulated $cpu CPU"
        [[ -n $want && $got == "$want" ]] \
            || die "on an emulated $cpu CPU hearth answered '$got', not '$want' (its $level kernels natively)"
        say "installed: runs on an emulated $cpu CPU (no AVX-512) with its $level kernels: ${got//$'\n'/ }"
    done
fi
window_check installed-window /usr/bin/hearth

say "dpkg --purge hearth"
dpkg --purge hearth >/dev/null || die "dpkg --purge failed"
! dpkg -s hearth >/dev/null 2>&1 || die "hearth is still known to dpkg after --purge"
left=0
while read -r path; do
    if [[ -f $path || -L $path ]]; then
        echo "check: left behind: $path" >&2
        left=1
    fi
done <"$work/installed"
[[ $left -eq 0 ]] || die "files were left behind after removal"
if [[ -f /usr/share/mime/application/x-gguf.xml ]]; then
    die "the MIME database still knows application/x-gguf after removal"
fi
say "removed cleanly ($(wc -l <"$work/installed") paths)"

# --- The AppImage ---------------------------------------------------------------------------
say "AppImage $(basename "$appimage") ($(du -h "$appimage" | cut -f1))"
[[ $(od -An -tx1 -j8 -N3 "$appimage" | tr -d ' \n') == 414902 ]] || die "no AppImage type-2 magic at byte 8"
[[ -x $appimage ]] || die "the AppImage is not executable"
got=$(XDG_CACHE_HOME="$work/cache" "$appimage" --version)
[[ $got == "hearth $version" ]] || die "the AppImage's --version says '$got'"
XDG_CACHE_HOME="$work/cache" "$appimage" inspect "$model" | grep -q '^architecture' \
    || die "the AppImage's inspect failed"
say "AppImage: $got; inspect works"
window_check appimage-window "$appimage"

say "all Linux package checks passed"
