"""The hint printed before Qt aborts on a Linux desktop that lacks the xcb plugin's libraries (loader mocked)."""

from __future__ import annotations

import ctypes.util

import pytest

from gui import qt_platform
from gui.qt_platform import APT_COMMAND, XCB_LIBRARIES, missing_xcb_packages, warn_if_xcb_broken, xcb_hint

X_DESKTOP = {"DISPLAY": ":0"}


def loader_without(*missing: str):
    """A find_library that finds every library except `missing` (names without lib/.so)."""

    def find(name: str) -> str | None:
        return None if name in missing else f"lib{name}.so.0"

    return find


def test_a_missing_xcb_cursor_gets_the_apt_command():
    hint = xcb_hint([], X_DESKTOP, "linux", loader_without("xcb-cursor"))
    assert hint is not None
    assert (
        "libxcb-cursor0" in hint and APT_COMMAND in hint and "could not load the Qt platform plugin" in hint
    )
    for package in ("libxkbcommon-x11-0", "libxcb-icccm4", "libxcb-keysyms1", "libxcb-xinerama0"):
        assert package in APT_COMMAND


def test_every_library_is_checked_and_named():
    assert missing_xcb_packages(loader_without(*XCB_LIBRARIES)) == list(XCB_LIBRARIES.values())
    assert missing_xcb_packages(loader_without("xcb-icccm", "xcb-keysyms")) == [
        "libxcb-icccm4",
        "libxcb-keysyms1",
    ]


@pytest.mark.parametrize(
    ("argv", "environ", "platform"),
    [
        ([], X_DESKTOP, "darwin"),  # not Linux: no xcb plugin
        ([], {}, "linux"),  # no X display (a console, ssh): Qt's own message is the right one
        ([], {**X_DESKTOP, "QT_QPA_PLATFORM": "offscreen"}, "linux"),  # an explicit platform
        (["-platform", "offscreen"], X_DESKTOP, "linux"),
        ([], {**X_DESKTOP, "WAYLAND_DISPLAY": "wayland-0"}, "linux"),  # Qt 6 picks wayland there
    ],
)
def test_no_hint_where_xcb_is_not_in_play(argv, environ, platform):
    assert xcb_hint(argv, environ, platform, loader_without(*XCB_LIBRARIES)) is None


def test_no_hint_when_every_library_is_there(capsys):
    assert not warn_if_xcb_broken([], X_DESKTOP, platform="linux", find_library=loader_without())
    assert capsys.readouterr().err == ""


def test_the_default_lookup_is_the_dynamic_loaders(monkeypatch):
    asked: list[str] = []
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: asked.append(name) or None)
    assert qt_platform.missing_xcb_packages() == list(XCB_LIBRARIES.values())
    assert asked == list(XCB_LIBRARIES)


def test_run_prints_the_hint_to_stderr_before_creating_the_qapplication(monkeypatch, capsys):
    """`python main.py` (gui.app.run): the hint is out before Qt gets the chance to abort the process."""
    import gui.app

    class QtAborts:
        @staticmethod
        def instance():
            return None

        def __init__(self, *args):
            raise SystemExit(134)  # what Qt's abort looks like from here: nothing after it runs

    monkeypatch.setattr(gui.app, "QApplication", QtAborts)
    monkeypatch.setattr(qt_platform.sys, "platform", "linux")
    monkeypatch.setattr(ctypes.util, "find_library", loader_without("xcb-cursor"))
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(SystemExit):
        gui.app.run(["--no-autoload"])
    err = capsys.readouterr().err
    assert "libxcb-cursor0" in err and APT_COMMAND in err
