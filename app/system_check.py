"""Before Qt starts: can a window open here at all?

Qt finds out late and badly: a missing X11 library or a display with nothing behind it makes the
xcb platform plugin call qFatal, which prints "Reinstalling the application may fix this problem"
and aborts (exit 134). This module asks first, without importing Qt: it loads the system libraries
the platform plugin links against (by soname, as the dynamic loader will), asks the display whether
it answers (an xcb connection through ctypes, as Qt makes it), and puts what is missing into words:
the packages to install on Debian/Ubuntu and Fedora, or, with no display, the command line.

Only Linux is checked (macOS and Windows ship their platform plugin's needs with the OS), and a
platform other than xcb or wayland (QT_QPA_PLATFORM=offscreen, minimal, vnc, eglfs…) skips it.
`guard_qt_start` is the second line: a Qt fatal message about the platform plugin becomes our
message and exit status 1 instead of an abort, for whatever this check did not foresee.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

CLI_LINE = "lorastudio train CONFIG"
_HELD_CONNECTIONS: list[int] = []
NO_CHECK_PLATFORMS = ("offscreen", "minimal", "minimalegl", "vnc", "eglfs", "linuxfb", "vkkhrdisplay")


@dataclass(frozen=True)
class SystemLibrary:
    soname: str         # what the loader looks for
    debian: str         # the package that holds it on Debian / Ubuntu
    fedora: str         # and on Fedora


# What Qt's GUI library links against (every on-screen platform needs these).
GUI_LIBRARIES = (
    SystemLibrary("libGL.so.1", "libgl1", "libglvnd-glx"),
    SystemLibrary("libEGL.so.1", "libegl1", "libglvnd-egl"),
    SystemLibrary("libfontconfig.so.1", "libfontconfig1", "fontconfig"),
    SystemLibrary("libfreetype.so.6", "libfreetype6", "freetype"),
    SystemLibrary("libX11.so.6", "libx11-6", "libX11"),
    SystemLibrary("libglib-2.0.so.0", "libglib2.0-0", "glib2"),
    SystemLibrary("libdbus-1.so.3", "libdbus-1-3", "dbus-libs"),
    SystemLibrary("libxkbcommon.so.0", "libxkbcommon0", "libxkbcommon"),
)
# What the X11 platform plugin (libqxcb.so, libQt6XcbQpa.so.6) links against. The first seven
# are the ones a desktop install often lacks; the rest come with any X11 desktop.
XCB_LIBRARIES = (
    SystemLibrary("libxcb-cursor.so.0", "libxcb-cursor0", "xcb-util-cursor"),
    SystemLibrary("libxcb-icccm.so.4", "libxcb-icccm4", "xcb-util-wm"),
    SystemLibrary("libxcb-keysyms.so.1", "libxcb-keysyms1", "xcb-util-keysyms"),
    SystemLibrary("libxcb-image.so.0", "libxcb-image0", "xcb-util-image"),
    SystemLibrary("libxcb-render-util.so.0", "libxcb-render-util0", "xcb-util-renderutil"),
    SystemLibrary("libxcb-xkb.so.1", "libxcb-xkb1", "libxcb"),
    SystemLibrary("libxkbcommon-x11.so.0", "libxkbcommon-x11-0", "libxkbcommon-x11"),
    SystemLibrary("libxcb-util.so.1", "libxcb-util1", "xcb-util"),
    SystemLibrary("libxcb-randr.so.0", "libxcb-randr0", "libxcb"),
    SystemLibrary("libxcb-shm.so.0", "libxcb-shm0", "libxcb"),
    SystemLibrary("libxcb-sync.so.1", "libxcb-sync1", "libxcb"),
    SystemLibrary("libxcb-xfixes.so.0", "libxcb-xfixes0", "libxcb"),
    SystemLibrary("libxcb-render.so.0", "libxcb-render0", "libxcb"),
    SystemLibrary("libxcb-shape.so.0", "libxcb-shape0", "libxcb"),
    SystemLibrary("libxcb.so.1", "libxcb1", "libxcb"),
    SystemLibrary("libX11-xcb.so.1", "libx11-xcb1", "libX11-xcb"),
)


def can_load(soname: str) -> bool:
    """Whether the dynamic loader finds and loads `soname` (as it will when Qt loads its plugin)."""
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def missing_libraries(libraries, loadable: Callable[[str], bool] = can_load) -> list[SystemLibrary]:
    return [lib for lib in libraries if not loadable(lib.soname)]


def install_lines(missing: list[SystemLibrary]) -> str:
    debian = " ".join(dict.fromkeys(lib.debian for lib in missing))
    fedora = " ".join(dict.fromkeys(lib.fedora for lib in missing))
    return f"  Debian/Ubuntu:  sudo apt install {debian}\n  Fedora:         sudo dnf install {fedora}"


# ---- the display ----------------------------------------------------------------------------------
def x_display_answers(display: str) -> bool:
    """Whether an X server answers at `display` and lets us in: an xcb connection, as Qt makes it
    (a remote display is first tried with a short TCP timeout, so a dead host cannot hang us)."""
    host, _, rest = display.rpartition(":")
    number = rest.split(".")[0]
    if host and host != "unix" and "/" not in host and number.isdigit():
        try:
            socket.create_connection((host, 6000 + int(number)), timeout=3).close()
        except OSError:
            return False
    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return _x_socket_answers(number)
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    connection = xcb.xcb_connect(display.encode(), None)
    if not connection:
        return False
    if xcb.xcb_connection_has_error(connection) != 0:
        xcb.xcb_disconnect(connection)
        return False
    # Kept open until the process ends: an X server with no other client (a bare Xvfb) resets when
    # its last client leaves, and Qt connecting during that reset is refused.
    _HELD_CONNECTIONS.append(connection)
    return True


def _x_socket_answers(number: str) -> bool:
    """Without libxcb: does something listen on the local X socket for display `number`?"""
    if not number.isdigit():
        return True             # a form we do not know: let Qt judge it
    path = f"/tmp/.X11-unix/X{number}"
    for address in ("\0" + path, path):         # the abstract socket first, as xcb does
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            sock.connect(address)
            return True
    return False


def wayland_socket(env: Mapping[str, str]) -> Path | None:
    """The Wayland compositor's socket, if WAYLAND_DISPLAY names one that exists."""
    name = env.get("WAYLAND_DISPLAY", "")
    if not name:
        return None
    path = Path(name) if name.startswith("/") else Path(env.get("XDG_RUNTIME_DIR", "/nonexistent")) / name
    return path if path.exists() else None


def _platforms(env: Mapping[str, str]) -> list[str]:
    """The platform plugins Qt will try, in order (QT_QPA_PLATFORM="wayland;xcb", "xcb:opts"…)."""
    chosen = [p.split(":")[0].strip() for p in env.get("QT_QPA_PLATFORM", "").split(";") if p.strip()]
    if chosen:
        return chosen
    # Unset: a Wayland session gets wayland first, then xcb (through XWayland); otherwise xcb.
    if env.get("WAYLAND_DISPLAY") or env.get("XDG_SESSION_TYPE") == "wayland":
        return ["wayland", "xcb"]
    return ["xcb"]


# ---- the verdict ----------------------------------------------------------------------------------
def window_problem(env: Mapping[str, str] | None = None, platform: str | None = None,
                   loadable: Callable[[str], bool] = can_load,
                   x_answers: Callable[[str], bool] = x_display_answers) -> str | None:
    """What stops a window from opening here, in words with what to do; None when nothing does."""
    env = os.environ if env is None else env
    if (platform or sys.platform) != "linux":
        return None
    platforms = _platforms(env)
    if platforms[0] in NO_CHECK_PLATFORMS or not any(p == "xcb" or p.startswith("wayland") for p in platforms):
        return None
    if platforms[0].startswith("wayland") and wayland_socket(env) is not None:
        missing = missing_libraries(GUI_LIBRARIES, loadable)
        return _libraries_message(missing, "Qt's GUI library") if missing else None
    if "xcb" not in platforms:
        return _no_display_message(f"WAYLAND_DISPLAY is {env.get('WAYLAND_DISPLAY')!r} but no compositor "
                                   f"socket is there" if env.get("WAYLAND_DISPLAY") else "WAYLAND_DISPLAY is not set")
    missing = missing_libraries(GUI_LIBRARIES + XCB_LIBRARIES, loadable)
    display = env.get("DISPLAY", "")
    if not display:
        no_display = "DISPLAY is not set (a headless or SSH session without X forwarding?)"
    elif not x_answers(display):
        no_display = f"DISPLAY is {display!r}, but no X server answers there (or it refused the connection)"
    else:
        no_display = ""
    parts = []
    if missing:
        parts.append(_libraries_message(missing, "Qt's X11 platform plugin (xcb)"))
    if no_display:
        parts.append(_no_display_message(no_display))
    return "\n\n".join(parts) or None


def _libraries_message(missing: list[SystemLibrary], needed_by: str) -> str:
    return (f"error: LoRA Studio cannot open its window: {needed_by} needs system libraries that are not "
            f"installed: {', '.join(lib.soname for lib in missing)}.\n"
            f"  Install them, then start lorastudio again:\n{install_lines(missing)}\n"
            f"  The command line needs none of them: {CLI_LINE} (lorastudio --help lists every command).")


def _no_display_message(why: str) -> str:
    return (f"error: LoRA Studio cannot open its window: there is no display — {why}.\n"
            f"  Start it from a desktop session (or over `ssh -X`), or train from the command line, which needs "
            f"no display:\n    {CLI_LINE}\n  (lorastudio --help lists every command.)")


# ---- the second line: Qt's own fatal message ------------------------------------------------------
@contextlib.contextmanager
def guard_qt_start(stream=None, exit_=os._exit):
    """While the QApplication is created: a fatal message about the platform plugin (which Qt
    follows with abort()) becomes our words on stderr and exit status 1."""
    from PySide6.QtCore import QtMsgType, qInstallMessageHandler

    out = stream or sys.stderr
    previous = None

    def handler(kind, context, text):
        if kind == QtMsgType.QtFatalMsg and "platform plugin" in text:
            print(f"error: LoRA Studio cannot open its window: Qt could not start its platform plugin.\n"
                  f"  Qt said: {text.strip().splitlines()[0].split(' Reinstalling')[0]}\n"
                  f"  Check that a display is available, and on Linux that the X11 libraries are installed:\n"
                  f"{install_lines(list(XCB_LIBRARIES[:7]))}\n"
                  f"  The command line needs no display: {CLI_LINE}", file=out, flush=True)
            exit_(1)
        elif previous is not None:
            previous(kind, context, text)
        elif kind != QtMsgType.QtDebugMsg:
            print(text, file=out, flush=True)

    previous = qInstallMessageHandler(handler)
    try:
        yield
    finally:
        qInstallMessageHandler(previous)
