"""Draw the LoRA Studio icon set into resources/icons/ (PNG at every size, plus a
Windows .ico). Run it again after changing the drawing: the icons are committed, so
packaging needs no drawing step.

    python resources/make_icons.py [OUT_DIR]

The motif is the LoRA idea itself: a large frozen weight matrix W (pale square)
with its small trainable update drawn as a tall thin B and a wide thin A (orange).
Each size is downscaled from one large master, so edges stay smooth at 16 px too.
"""
from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZES = (16, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 32, 48, 64, 128, 256)  # the .ico format stops at 256
MASTER = 1024

BACKGROUND_TOP = (40, 36, 84)
BACKGROUND_BOTTOM = (76, 48, 140)
MATRIX = (236, 234, 246)
UPDATE = (255, 152, 56)


def _gradient(size: int) -> Image.Image:
    grad = Image.new("RGBA", (1, size))
    for y in range(size):
        t = y / (size - 1)
        grad.putpixel((0, y), tuple(round(a + (b - a) * t) for a, b in zip(BACKGROUND_TOP, BACKGROUND_BOTTOM)) + (255,))
    return grad.resize((size, size))


def draw_master(size: int = MASTER) -> Image.Image:
    """The icon at full size on a transparent canvas."""
    s = size / 1024  # the layout below is in 1024-px units
    icon = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rounded_rectangle((40 * s, 40 * s, 984 * s, 984 * s), radius=210 * s, fill=255)
    icon.paste(_gradient(size), (0, 0), mask)

    draw = ImageDraw.Draw(icon)
    o = 27  # centres the W + B + A group (it spans 170..800) on the canvas
    # W: the frozen matrix.
    draw.rounded_rectangle(((300 + o) * s, (300 + o) * s, (800 + o) * s, (800 + o) * s), radius=36 * s, fill=MATRIX)
    # B (tall and thin) left of W, A (wide and thin) above it: W + B·A.
    draw.rounded_rectangle(((170 + o) * s, (300 + o) * s, (250 + o) * s, (800 + o) * s), radius=28 * s, fill=UPDATE)
    draw.rounded_rectangle(((300 + o) * s, (170 + o) * s, (800 + o) * s, (250 + o) * s), radius=28 * s, fill=UPDATE)
    # A faint grid on W reads as "matrix" at large sizes and vanishes at small ones.
    for i in range(1, 4):
        x = (300 + o + 125 * i) * s
        draw.line((x, (330 + o) * s, x, (770 + o) * s), fill=(206, 202, 226), width=max(1, round(8 * s)))
        draw.line(((330 + o) * s, x, (770 + o) * s, x), fill=(206, 202, 226), width=max(1, round(8 * s)))
    return icon


def make_icons(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    master = draw_master()
    written = []
    for size in SIZES:
        path = out_dir / f"lora-studio-{size}.png"
        master.resize((size, size), Image.LANCZOS).save(path, optimize=True)
        written.append(path)
    ico = out_dir / "lora-studio.ico"
    master.resize((256, 256), Image.LANCZOS).save(ico, sizes=[(n, n) for n in ICO_SIZES])
    written.append(ico)
    return written


def main(argv: list[str]) -> int:
    out_dir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "icons"
    for path in make_icons(out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
