"""DESIGN.md's layers, checked on the source: who may import whom (lazy imports
included), and no import circles."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lora_studio"
CYCLES_TOOL = ROOT.parent / "shared" / "tools" / "import_cycles.py"

# package prefix -> prefixes it must never import
FORBIDDEN = {
    "lora_studio.engine": ("lora_studio.cli", "lora_studio.commands", "lora_studio.ui"),
    "lora_studio.engine.core": ("lora_studio.engine.text", "lora_studio.engine.image",
                                "lora_studio.engine.families", "lora_studio.engine.run"),
    "lora_studio.engine.text": ("lora_studio.engine.image",),
    "lora_studio.engine.image": ("lora_studio.engine.text",),
    "lora_studio.config": ("lora_studio.engine", "lora_studio.ui", "lora_studio.cli",
                           "lora_studio.commands", "torch"),
    "lora_studio.data": ("lora_studio.engine", "lora_studio.ui", "lora_studio.cli",
                         "lora_studio.commands", "torch"),
    "lora_studio.runs": ("lora_studio.engine", "lora_studio.ui", "lora_studio.cli",
                         "lora_studio.commands", "torch", "PySide6"),
    "lora_studio.playground": ("lora_studio.ui", "lora_studio.cli", "lora_studio.commands"),
    # serve talks to the playground process over its protocol: no ML library in the server
    "lora_studio.serve": ("lora_studio.engine", "lora_studio.playground", "lora_studio.ui",
                          "lora_studio.cli", "lora_studio.commands", "torch", "PySide6"),
    "lora_studio.captioning": ("lora_studio.ui", "lora_studio.cli", "lora_studio.commands"),
    "lora_studio.hardware": ("lora_studio.engine", "lora_studio.ui", "lora_studio.cli",
                             "lora_studio.commands"),
}


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    module = module_of(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_no_module_imports_what_its_layer_must_not():
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_of(path)
        for layer, banned in FORBIDDEN.items():
            if within(module, layer):
                broken += [f"{module} imports {name}" for name in sorted(imported(path))
                           if any(within(name, b) for b in banned)]
    assert not broken, "\n".join(broken)


def test_the_checker_sees_relative_and_lazy_imports(tmp_path):
    """The rule check above is only as good as its parser."""
    names = imported(PACKAGE / "engine" / "run.py")
    assert "lora_studio.engine.families.family_package" in names  # relative, at the top
    assert "lora_studio.engine.core.trainer.train" in names        # relative, inside a function


@pytest.mark.skipif(not CYCLES_TOOL.exists(), reason="needs ../shared/tools/import_cycles.py")
def test_no_import_circles():
    result = subprocess.run([sys.executable, str(CYCLES_TOOL), "lora_studio"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout
