"""Before the window opens on Linux: can Qt's X11 platform plugin load? When a system
library it links to is missing, Qt aborts the process with a core dump and a message
that names at best one of them; this names every one and the packages that hold them.
No Qt import: it reads the installed PySide6's plugin with ``ldd``."""
from __future__ import annotations

import importlib.util
import subprocess
from collections.abc import Mapping
from pathlib import Path

# soname -> the Debian / Ubuntu package that installs it
DEBIAN_PACKAGES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libOpenGL.so.0": "libopengl0",
    "libdbus-1.so.3": "libdbus-1-3",
}
PLUGIN = Path("Qt", "plugins", "platforms", "libqxcb.so")


def wants_xcb(env: Mapping[str, str]) -> bool:
    """Whether Qt will use its X11 plugin: asked for, or nothing asked and no Wayland
    session (where Qt tries Wayland first)."""
    asked = env.get("QT_QPA_PLATFORM", "")
    return asked.startswith("xcb") or (not asked and not env.get("WAYLAND_DISPLAY"))


def not_found(ldd_output: str) -> list[str]:
    """The sonames ``ldd`` could not resolve, each once, in its order."""
    names = [line.split("=>")[0].strip() for line in ldd_output.splitlines()
             if "=>" in line and line.split("=>")[1].strip() == "not found"]
    return list(dict.fromkeys(names))


def missing_message(sonames: list[str]) -> str:
    packages = list(dict.fromkeys(DEBIAN_PACKAGES[s] for s in sonames if s in DEBIAN_PACKAGES))
    unknown = [s for s in sonames if s not in DEBIAN_PACKAGES]
    install = f" On Debian / Ubuntu: sudo apt install {' '.join(packages)}." if packages else ""
    other = (f" Install the package that provides {', '.join(unknown)} on your system."
             if unknown else "")
    return ("the app window cannot open: Qt's X11 plugin needs system libraries that are not "
            f"installed: {', '.join(sonames)}.{install}{other} On a Wayland desktop, "
            "QT_QPA_PLATFORM=wayland lora-studio works without them.")


def xcb_plugin() -> Path | None:
    spec = importlib.util.find_spec("PySide6")  # finds the package without importing Qt
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / PLUGIN).is_file():
            return Path(folder) / PLUGIN
    return None


def missing_xcb_libraries(plugin: Path) -> list[str]:
    """What ``ldd`` finds missing for the plugin; nothing when ldd cannot tell (not
    installed, or failed), so the check never stands in the way of a working Qt."""
    try:
        done = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return not_found(done.stdout) if done.returncode == 0 else []


def xcb_problem(env: Mapping[str, str], platform: str) -> str | None:
    """The message to print instead of Qt's core dump, or None when all is well (or it
    is not Linux's X11 that Qt will use)."""
    if not platform.startswith("linux") or not wants_xcb(env):
        return None
    plugin = xcb_plugin()
    missing = missing_xcb_libraries(plugin) if plugin else []
    return missing_message(missing) if missing else None
