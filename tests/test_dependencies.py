"""The install stays lean: Qt comes from PySide6-Essentials, which must hold every Qt
module the app imports (the PySide6 meta-package would add Addons and WebEngine)."""
import importlib.metadata
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_qt_comes_from_pyside6_essentials_and_holds_every_module_used():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    assert "pyside6-essentials" in names and "pyside6" not in names
    essentials = {f.stem for f in importlib.metadata.files("PySide6-Essentials")
                  if f.suffix == ".pyi" and f.parent.name == "PySide6"}
    used = {m for path in (ROOT / "lora_studio").rglob("*.py")
            for m in re.findall(r"PySide6\.(Qt\w+)", path.read_text(encoding="utf-8"))}
    assert {"QtCore", "QtGui", "QtWidgets"} <= used
    # pyqtgraph's plots use these too (its OpenGL and SVG parts as well)
    assert used | {"QtOpenGL", "QtOpenGLWidgets", "QtSvg"} <= essentials
