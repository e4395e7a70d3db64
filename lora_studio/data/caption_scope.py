"""Which images an auto-captioning run covers, as the Dataset tab offers them: the
selection, the images shown (after filters), one kohya folder, or all."""
from __future__ import annotations

from collections.abc import Sequence


def caption_scopes(selected: Sequence[int], shown: Sequence[int],
                   folders: Sequence[tuple[str, Sequence[int]]], total: int
                   ) -> list[tuple[str, list[int]]]:
    """(label, image indices) per choice, the narrowest first; empty choices and a
    shown set that is everything are left out."""
    scopes = []
    if selected:
        scopes.append((f"Selected images ({len(selected)})", list(selected)))
    if shown and len(shown) < total:
        scopes.append((f"Shown images ({len(shown)})", list(shown)))
    if len(folders) > 1:
        scopes += [(f"Folder {name or '(top folder)'} ({len(keys)})", list(keys))
                   for name, keys in folders if keys]
    scopes.append((f"All images ({total})", list(range(total))))
    return scopes
