"""A readable hint when Qt's xcb platform plugin can't load, printed before QApplication exists.

On a bare Linux desktop Qt 6's xcb plugin needs X libraries that many distributions don't install by
default (Debian/Ubuntu: libxcb-cursor0 and its siblings). Without them Qt prints "could not load the Qt
platform plugin "xcb"" and aborts the process, so nothing after `QApplication(...)` can explain it: the
check runs first, with the dynamic loader's own lookup (`ctypes.util.find_library`), and only prints.
No Qt import here.
"""

from __future__ import annotations

import ctypes.util
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

# find_library name -> the Debian/Ubuntu package that ships it (what libqxcb.so links, beyond libxcb)
XCB_LIBRARIES = {
    "xcb-cursor": "libxcb-cursor0",
    "xkbcommon-x11": "libxkbcommon-x11-0",
    "xcb-icccm": "libxcb-icccm4",
    "xcb-keysyms": "libxcb-keysyms1",
    "xcb-shape": "libxcb-shape0",
    "xcb-randr": "libxcb-randr0",
    "xcb-render-util": "libxcb-render-util0",
    "xcb-image": "libxcb-image0",
}
APT_PACKAGES = (
    "libxcb-cursor0 libxkbcommon-x11-0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0 libxcb-xinerama0 "
    "libxcb-randr0 libxcb-render-util0 libxcb-image0"
)
APT_COMMAND = f"sudo apt-get install {APT_PACKAGES}"


def uses_xcb(argv: Sequence[str], environ: Mapping[str, str], platform: str) -> bool:
    """Whether Qt is about to pick its xcb plugin: Linux, an X display, and no platform chosen otherwise."""
    if not platform.startswith("linux"):
        return False
    if environ.get("QT_QPA_PLATFORM") or any(a == "-platform" or a.startswith("-platform=") for a in argv):
        return False  # an explicit choice (offscreen, wayland, xcb…): Qt's own message names it
    if environ.get("WAYLAND_DISPLAY"):
        return False  # Qt 6 prefers its wayland plugin there
    return bool(environ.get("DISPLAY"))


def missing_xcb_packages(find_library: Callable[[str], str | None] | None = None) -> list[str]:
    """The packages whose library the dynamic loader can't find."""
    find = find_library or ctypes.util.find_library  # looked up at call time (tests mock it)
    return [package for name, package in XCB_LIBRARIES.items() if not find(name)]


def xcb_hint(
    argv: Sequence[str],
    environ: Mapping[str, str],
    platform: str | None = None,
    find_library: Callable[[str], str | None] | None = None,
) -> str | None:
    """The hint to print, or None when the xcb plugin isn't in play or its libraries are all there."""
    if not uses_xcb(argv, environ, platform or sys.platform):
        return None
    missing = missing_xcb_packages(find_library)
    if not missing:
        return None
    return (
        f"ActAdd Studio: Qt's xcb platform plugin needs libraries that are not installed ({', '.join(missing)}),\n"
        "so Qt will probably stop with 'could not load the Qt platform plugin \"xcb\"'. On Debian or Ubuntu:\n"
        f"    {APT_COMMAND}\n"
        "(other distributions: the xcb-util-cursor, xcb-util-wm, xcb-util-keysyms, xcb-util-image,\n"
        "xcb-util-renderutil and libxkbcommon-x11 packages). The command line (python main.py capture|generate|\n"
        "...) needs none of them."
    )


def warn_if_xcb_broken(
    argv: Sequence[str],
    environ: Mapping[str, str],
    stream: TextIO | None = None,
    platform: str | None = None,
    find_library: Callable[[str], str | None] | None = None,
) -> bool:
    """Print the hint to `stream` (stderr) if needed; True if it printed."""
    hint = xcb_hint(argv, environ, platform, find_library)
    if hint is None:
        return False
    print(hint, file=stream or sys.stderr, flush=True)
    return True
