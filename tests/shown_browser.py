"""The Dataset tab's browser as the widget tests use it: on screen (thumbnails, health
and token counts start when it is shown), a folder opened and its captions read."""
from __future__ import annotations

from pathlib import Path


def shown_browser(qtbot, root: Path | None = None, size: tuple[int, int] = (1200, 760)):
    from lora_studio.ui.dataset_browser import DatasetBrowser
    b = DatasetBrowser()
    qtbot.addWidget(b)
    b.resize(*size)
    b.show()
    qtbot.waitExposed(b)
    if root is not None:
        assert b.open_folder(root) and b.wait_for_captions()
    return b
