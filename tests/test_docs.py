"""The README points only at files a clone has, and its apt line names the packages
the missing-library check would ask for."""
import re
from pathlib import Path

from lora_studio.xcb_libs import DEBIAN_PACKAGES

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_links_stay_in_the_repository():
    targets = re.findall(r"\]\(([^)#\s]+)", README)
    local = [t for t in targets if not re.match(r"[a-z]+://", t)]
    assert "docs/architecture.md" in local
    for target in local:
        path = (ROOT / target).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), target
    assert "shared/DESIGN.md" not in README  # not in a clone


def test_readme_apt_line_names_known_packages():
    line = re.search(r"sudo apt install ([^`]+?)\n```", README, re.S).group(1)
    packages = line.replace("\\", " ").split()
    assert {"libxcb-cursor0", "libxcb-icccm4", "libxcb-keysyms1"} <= set(packages)
    assert set(packages) <= set(DEBIAN_PACKAGES.values())
