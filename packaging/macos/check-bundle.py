#!/usr/bin/env python3
"""Checks the layout and Info.plist of a Hearth.app made by `cargo packager -f app`.

CI runs this on Linux, where the bundle holds the Linux binary: it checks the configuration
(what macOS reads from the bundle), not a Mac build. Usage: check-bundle.py Hearth.app VERSION
"""
import plistlib
import sys
from pathlib import Path


def fail(message: str) -> None:
    print(f"check-bundle: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def main() -> None:
    if len(sys.argv) != 3:
        fail("usage: check-bundle.py Hearth.app VERSION")
    app, version = Path(sys.argv[1]), sys.argv[2]
    contents = app / "Contents"
    for path in ["Info.plist", "MacOS/hearth", "Resources/hearth.icns"]:
        if not (contents / path).is_file():
            fail(f"{app.name} lacks Contents/{path}")
    icns = (contents / "Resources/hearth.icns").read_bytes()
    if icns[:4] != b"icns" or b"ic10" not in icns:
        fail("hearth.icns is not an icns file with the 1024 px (ic10) icon")
    plist = plistlib.loads((contents / "Info.plist").read_bytes())
    want = {
        "CFBundleExecutable": "hearth",
        "CFBundleIdentifier": "app.hearth.Hearth",
        "CFBundleName": "Hearth",
        "CFBundleShortVersionString": version,
        "CFBundleIconFile": "hearth.icns",
        "NSHighResolutionCapable": True,
        "LSMinimumSystemVersion": "11.0",
    }
    for key, value in want.items():
        if plist.get(key) != value:
            fail(f"Info.plist has {key} = {plist.get(key)!r}, not {value!r}")
    documents = plist.get("CFBundleDocumentTypes", [])
    if not any("gguf" in d.get("CFBundleTypeExtensions", []) for d in documents):
        fail("Info.plist declares no document type for .gguf")
    types = plist.get("UTImportedTypeDeclarations", [])
    if not any(
        "gguf" in t.get("UTTypeTagSpecification", {}).get("public.filename-extension", [])
        for t in types
    ):
        fail("Info.plist declares no GGUF type (UTImportedTypeDeclarations)")
    print(f"check-bundle: {app.name}: layout, icon and Info.plist keys as configured")


if __name__ == "__main__":
    main()
