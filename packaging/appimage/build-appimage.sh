#!/usr/bin/env bash
# Builds Hearth's Linux AppImage offline: an AppDir packed with mksquashfs (zstd) behind our own
# runtime (packaging/appimage-runtime), so neither appimagetool nor the upstream runtime has to
# be downloaded.
#
# Usage: packaging/appimage/build-appimage.sh HEARTH_BINARY OUTPUT.AppImage
#   HEARTH_BINARY  the `hearth` binary to ship (target/dist/hearth, built with --profile dist)
#   OUTPUT         the AppImage file to write (replaced if it exists)
#
# Needs: mksquashfs (Debian: apt-get install squashfs-tools) and, unless
# HEARTH_APPIMAGE_RUNTIME is set, cargo.
#
# Environment (all optional):
#   HEARTH_APPIMAGE_RUNTIME  a built hearth-appimage-runtime binary to use instead of building one
#   HEARTH_DESKTOP_FILE      the desktop entry (default: packaging/linux/hearth.desktop)
#   HEARTH_ICONS_DIR         the folder of hearth-<size>.png icons (default: assets/icons);
#                            hearth-256.png is required, the other sizes go to usr/share/icons
set -euo pipefail
umask 022

die() {
    echo "build-appimage: error: $*" >&2
    exit 1
}
say() {
    echo "build-appimage: $*"
}

[[ $# -eq 2 ]] || die "usage: $0 HEARTH_BINARY OUTPUT.AppImage"
hearth_binary=$1
output=$2
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
desktop_file=${HEARTH_DESKTOP_FILE:-$repo_root/packaging/linux/hearth.desktop}
icons_dir=${HEARTH_ICONS_DIR:-$repo_root/assets/icons}
root_icon=$icons_dir/hearth-256.png

# Check every input before doing any work.
[[ -f $hearth_binary && -x $hearth_binary ]] || die "$hearth_binary is not an executable file"
[[ -f $desktop_file ]] || die "no desktop file at $desktop_file"
grep -qx 'Icon=hearth' "$desktop_file" \
    || die "$desktop_file must say Icon=hearth (the AppImage's icon is hearth.png at its root)"
[[ -f $root_icon ]] || die "no icon at $root_icon (the AppImage needs a 256x256 hearth.png)"
# A PNG's width and height are big-endian 32-bit numbers at bytes 16 and 20 (the IHDR chunk).
[[ $(head -c 8 "$root_icon" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] \
    || die "$root_icon is not a PNG file"
icon_size=$(od -An -tu1 -j16 -N8 "$root_icon" | awk '{ print $1*16777216 + $2*65536 + $3*256 + $4 "x" $5*16777216 + $6*65536 + $7*256 + $8 }')
[[ $icon_size == 256x256 ]] || die "$root_icon is $icon_size pixels, not 256x256"
command -v mksquashfs >/dev/null \
    || die "mksquashfs not found; install Debian's squashfs-tools (apt-get install squashfs-tools)"

work=$(mktemp -d)
trap 'rm -rf "$work" "$output.partial-$$"' EXIT

# The runtime: the ELF head of the AppImage.
if [[ -n ${HEARTH_APPIMAGE_RUNTIME:-} ]]; then
    runtime=$HEARTH_APPIMAGE_RUNTIME
    [[ -f $runtime ]] || die "HEARTH_APPIMAGE_RUNTIME is $runtime, which is not a file"
else
    say "building hearth-appimage-runtime"
    # The installers' profile (stripped, no debug info): the runtime is 1 MB instead of 20 MB.
    (cd "$repo_root" && cargo build --profile dist --quiet -p hearth-appimage-runtime) \
        || die "cargo build --profile dist -p hearth-appimage-runtime failed"
    runtime=${CARGO_TARGET_DIR:-$repo_root/target}/dist/hearth-appimage-runtime
fi
[[ $(head -c 4 "$runtime" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]] \
    || die "the runtime $runtime is not an ELF file"

# The AppDir. AppRun is a symlink: the runtime execs it with the app's arguments.
say "assembling the AppDir"
app_dir=$work/AppDir
mkdir -p "$app_dir/usr/bin" "$app_dir/usr/share/applications"
install -m 755 "$hearth_binary" "$app_dir/usr/bin/hearth"
ln -s usr/bin/hearth "$app_dir/AppRun"
install -m 644 "$desktop_file" "$app_dir/hearth.desktop"
install -m 644 "$desktop_file" "$app_dir/usr/share/applications/hearth.desktop"
install -m 644 "$root_icon" "$app_dir/hearth.png"
ln -s hearth.png "$app_dir/.DirIcon"
for icon in "$icons_dir"/hearth-*.png; do
    [[ -f $icon ]] || continue
    size=${icon##*/hearth-}
    size=${size%.png}
    if [[ ! $size =~ ^[0-9]+$ ]]; then
        say "skipping $icon: not named hearth-<size>.png"
        continue
    fi
    install -D -m 644 "$icon" "$app_dir/usr/share/icons/hicolor/${size}x${size}/apps/hearth.png"
done
if [[ -f $icons_dir/hearth.svg ]]; then
    install -D -m 644 "$icons_dir/hearth.svg" "$app_dir/usr/share/icons/hicolor/scalable/apps/hearth.svg"
fi

say "packing the image (mksquashfs, zstd)"
mksquashfs "$app_dir" "$work/image.sqfs" -root-owned -noappend -comp zstd -quiet -no-progress \
    || die "mksquashfs failed"

# The AppImage: runtime with the type-2 magic "AI\x02" at offset 8 (the ELF header's padding,
# which file managers read), then the image.
cp "$runtime" "$work/runtime"
printf '\x41\x49\x02' | dd of="$work/runtime" bs=1 seek=8 conv=notrunc status=none
cat "$work/runtime" "$work/image.sqfs" >"$work/hearth.AppImage"
chmod 755 "$work/hearth.AppImage"

# Check that the runtime finds the image where it was put.
runtime_size=$(stat -c %s "$work/runtime")
offset=$("$work/hearth.AppImage" --appimage-offset) \
    || die "the assembled AppImage does not run (--appimage-offset failed)"
[[ $offset == "$runtime_size" ]] \
    || die "the runtime reports its image at offset $offset, but it was appended at $runtime_size"

# Copied beside the output first, so that the output is replaced in one rename.
mkdir -p "$(dirname "$output")"
cp "$work/hearth.AppImage" "$output.partial-$$"
mv -f "$output.partial-$$" "$output"
say "wrote $output ($(du -h "$output" | cut -f1))"
