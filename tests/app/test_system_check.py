"""Before Qt starts: a missing system library or a display with nothing behind it is put into words
(what to install on Debian/Ubuntu and Fedora, or the command line) and exits 1 — not Qt's abort."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lorastudio.app.system_check import (CLI_LINE, GUI_LIBRARIES, XCB_LIBRARIES, can_load, window_problem,
                                         x_display_answers)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the check is Linux's")


def free_display() -> str:
    """A local X display number nothing listens on."""
    for n in range(87, 200):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return f":{n}"
    raise RuntimeError("no free display number")


def all_there(_soname: str) -> bool:
    return True


def answers(_display: str) -> bool:
    return True


def test_a_display_with_nothing_behind_it_is_named_and_points_to_the_cli():
    display = free_display()
    assert not x_display_answers(display)               # the real xcb connection, refused
    problem = window_problem({"DISPLAY": display}, "linux", loadable=all_there)
    assert f"DISPLAY is '{display}', but no X server answers there" in problem
    assert CLI_LINE in problem and "sudo apt" not in problem


def test_no_display_at_all_is_named():
    problem = window_problem({}, "linux", loadable=all_there, x_answers=answers)
    assert "there is no display — DISPLAY is not set" in problem and CLI_LINE in problem


def test_a_missing_library_gets_its_package_for_debian_and_fedora():
    missing = {"libxcb-icccm.so.4", "libxcb-keysyms.so.1"}
    problem = window_problem({"DISPLAY": ":0"}, "linux", loadable=lambda s: s not in missing, x_answers=answers)
    assert "not installed: libxcb-icccm.so.4, libxcb-keysyms.so.1." in problem
    assert "Debian/Ubuntu:  sudo apt install libxcb-icccm4 libxcb-keysyms1\n" in problem
    assert "Fedora:         sudo dnf install xcb-util-wm xcb-util-keysyms\n" in problem
    assert "no display" not in problem


def test_missing_libraries_and_no_display_are_both_said():
    problem = window_problem({}, "linux", loadable=lambda s: s != "libxcb-cursor.so.0", x_answers=answers)
    assert "sudo apt install libxcb-cursor0\n" in problem and "sudo dnf install xcb-util-cursor\n" in problem
    assert "DISPLAY is not set" in problem


def test_a_remote_display_that_does_not_answer_is_refused():
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 6093)) == 0:
            pytest.skip("something listens on port 6093")
    assert not x_display_answers("127.0.0.1:93")


@pytest.mark.parametrize("env", [{"QT_QPA_PLATFORM": "offscreen"}, {"QT_QPA_PLATFORM": "minimal"},
                                 {"QT_QPA_PLATFORM": "vnc:size=800x600"}])
def test_platforms_without_a_screen_skip_the_check(env):
    assert window_problem(env, "linux", loadable=lambda s: False, x_answers=lambda d: False) is None


def test_other_systems_are_not_checked():
    assert window_problem({}, "darwin", loadable=lambda s: False) is None


def test_a_wayland_session_does_not_need_the_xcb_libraries(tmp_path):
    (tmp_path / "wayland-0").touch()
    env = {"WAYLAND_DISPLAY": "wayland-0", "XDG_RUNTIME_DIR": str(tmp_path)}
    xcb = {lib.soname for lib in XCB_LIBRARIES}
    assert window_problem(env, "linux", loadable=lambda s: s not in xcb, x_answers=lambda d: False) is None
    gui_missing = window_problem(env, "linux", loadable=lambda s: s != "libEGL.so.1")
    assert "Qt's GUI library needs" in gui_missing and "sudo apt install libegl1\n" in gui_missing


def test_wayland_asked_for_without_a_compositor_is_no_display(tmp_path):
    env = {"QT_QPA_PLATFORM": "wayland", "WAYLAND_DISPLAY": "wayland-9", "XDG_RUNTIME_DIR": str(tmp_path)}
    problem = window_problem(env, "linux", loadable=all_there)
    assert "no display — WAYLAND_DISPLAY is 'wayland-9' but no compositor socket is there" in problem


def test_a_working_setup_passes():
    assert window_problem({"DISPLAY": ":0"}, "linux", loadable=all_there, x_answers=answers) is None


def test_library_lookup_is_the_dynamic_loader():
    assert can_load("libc.so.6")
    assert not can_load("libno-such-library-lorastudio.so.7")
    assert len({lib.soname for lib in GUI_LIBRARIES + XCB_LIBRARIES}) == len(GUI_LIBRARIES + XCB_LIBRARIES)


# ---- real processes: the launcher, and Qt's own fatal message -------------------------------------
def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("QT_QPA_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE")}
    return {**env, **extra}


def test_the_launcher_exits_1_with_the_message_when_the_display_answers_nothing(tmp_path):
    display = free_display()
    result = subprocess.run([sys.executable, "-m", "lorastudio.app.launcher"], capture_output=True, text=True,
                            timeout=120, env=_env(DISPLAY=display, HOME=str(tmp_path)))
    assert result.returncode == 1, result.stderr
    assert f"there is no display — DISPLAY is '{display}'" in result.stderr
    assert CLI_LINE in result.stderr
    assert "Reinstalling" not in result.stderr and "Traceback" not in result.stderr


def test_the_launcher_exits_1_without_any_display(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lorastudio.app.launcher"], capture_output=True, text=True,
                            timeout=120, env=_env(HOME=str(tmp_path)))
    assert result.returncode == 1, result.stderr
    assert "DISPLAY is not set" in result.stderr and CLI_LINE in result.stderr


def test_qts_fatal_platform_message_becomes_ours_and_exit_1(tmp_path):
    # Past the check (the window started directly): Qt's qFatal would abort with exit 134.
    code = "import sys\nfrom lorastudio.app.application import run\nsys.exit(run([]))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=_env(QT_QPA_PLATFORM="xcb", DISPLAY=free_display(), HOME=str(tmp_path)))
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "cannot open its window: Qt could not start its platform plugin" in result.stderr
    assert "Reinstalling" not in result.stderr and CLI_LINE in result.stderr
