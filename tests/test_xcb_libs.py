"""When Qt's X11 plugin cannot load, the missing system libraries and their packages
are named before Qt would abort; checked with made-up ldd output, not a broken system."""
import os
import sys
import types

import pytest

from lora_studio import cli, xcb_libs

LDD = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibQt6XcbQpa.so.6 => /site/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f1)
\tlibxcb-cursor.so.0 => not found
\tlibxcb-icccm.so.4 => not found
\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x00007f2)
\tlibxcb-icccm.so.4 => not found
\tlibodd.so.7 => not found
"""


def test_ldd_output_names_each_missing_library_once():
    assert xcb_libs.not_found(LDD) == ["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libodd.so.7"]
    assert xcb_libs.not_found("\tlibxcb.so.1 => /lib/libxcb.so.1 (0x1)\n") == []


def test_the_message_names_the_packages_to_install():
    message = xcb_libs.missing_message(["libxcb-cursor.so.0", "libxcb-icccm.so.4", "libodd.so.7"])
    assert "sudo apt install libxcb-cursor0 libxcb-icccm4." in message
    assert "libxcb-cursor.so.0, libxcb-icccm.so.4, libodd.so.7" in message
    assert "provides libodd.so.7" in message


@pytest.mark.parametrize("env,wanted", [
    ({}, True), ({"QT_QPA_PLATFORM": "xcb"}, True), ({"QT_QPA_PLATFORM": "xcb;wayland"}, True),
    ({"QT_QPA_PLATFORM": "offscreen"}, False), ({"WAYLAND_DISPLAY": "wayland-0"}, False),
    ({"WAYLAND_DISPLAY": "wayland-0", "QT_QPA_PLATFORM": "xcb"}, True),
])
def test_only_when_qt_will_use_x11(env, wanted):
    assert xcb_libs.wants_xcb(env) is wanted


def test_ldd_is_asked_about_the_plugin(tmp_path, monkeypatch):
    if sys.platform == "win32":
        pytest.skip("a shell script stands in for ldd")
    fake = tmp_path / "bin" / "ldd"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ncat <<'EOF'\n{LDD}EOF\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    plugin = tmp_path / "libqxcb.so"
    assert xcb_libs.missing_xcb_libraries(plugin)[:2] == ["libxcb-cursor.so.0", "libxcb-icccm.so.4"]
    fake.write_text("#!/bin/sh\nexit 1\n")  # ldd cannot tell: no verdict, Qt decides
    assert xcb_libs.missing_xcb_libraries(plugin) == []
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert xcb_libs.missing_xcb_libraries(plugin) == []


def test_the_window_is_not_started_when_libraries_are_missing(monkeypatch, capsys, tmp_path):
    started = []
    fake_app = types.ModuleType("lora_studio.ui.app")
    fake_app.main = lambda: started.append(True) or 0
    monkeypatch.setitem(sys.modules, "lora_studio.ui.app", fake_app)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(xcb_libs, "xcb_plugin", lambda: tmp_path / "libqxcb.so")
    monkeypatch.setattr(xcb_libs, "missing_xcb_libraries", lambda plugin: ["libxcb-cursor.so.0"])
    assert cli.main([]) == 2 and not started
    err = capsys.readouterr().err
    assert err.startswith("lora-studio: error: the app window cannot open") and "Traceback" not in err
    assert "sudo apt install libxcb-cursor0" in err
    monkeypatch.setattr(xcb_libs, "missing_xcb_libraries", lambda plugin: [])
    assert cli.main([]) == 0 and started == [True]
    assert xcb_libs.xcb_problem({"QT_QPA_PLATFORM": "offscreen"}, "linux") is None
    monkeypatch.setattr(xcb_libs, "missing_xcb_libraries", lambda plugin: ["libxcb-cursor.so.0"])
    assert xcb_libs.xcb_problem({}, "win32") is None


def test_the_installed_pyside6_has_the_plugin_where_it_is_looked_for():
    if not sys.platform.startswith("linux"):
        pytest.skip("the xcb plugin is Linux's")
    plugin = xcb_libs.xcb_plugin()
    assert plugin is not None and plugin.name == "libqxcb.so" and plugin.is_file()
