"""An XY grid as one labelled picture, and PNGs that carry A1111's ``parameters``."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from ..fsutil import atomic_write_bytes

PAD = 6


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1 has one bitmap size
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int, lines: int = 2) -> list[str]:
    """At most ``lines`` lines, broken at spaces, the last one cut to fit: a column
    label over a small picture ("strength 0.5" over 64 pixels) stays readable."""
    words, out = text.split(" "), []
    while words and len(out) < lines - 1:
        line = words.pop(0)
        while words and draw.textlength(f"{line} {words[0]}", font=font) <= width:
            line += " " + words.pop(0)
        out.append(line)
    if words:
        out.append(" ".join(words))
    return [_fit(draw, line, font, width) for line in out]


def compose(images: list[list[Image.Image]], col_labels: list[str], row_labels: list[str]) -> Image.Image:
    """Rows of equally sized images under column labels, beside row labels."""
    cell_w, cell_h = images[0][0].size
    font = _font(max(12, min(24, cell_w // 12)))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = int(font.size * 1.4) if hasattr(font, "size") else 16
    left = min(max(int(max(probe.textlength(t, font=font) for t in row_labels)) + 2 * PAD, 60),
               max(cell_w, 160))
    heads = [_wrap(probe, label, font, cell_w - 2 * PAD) for label in col_labels]
    top = line_h * max(len(h) for h in heads) + 2 * PAD
    grid = Image.new("RGB", (left + cell_w * len(col_labels), top + cell_h * len(row_labels)), "white")
    draw = ImageDraw.Draw(grid)
    for c, lines in enumerate(heads):
        for i, line in enumerate(lines):
            draw.text((left + c * cell_w + PAD, PAD + i * line_h), line, fill="black", font=font)
    for r, (label, row) in enumerate(zip(row_labels, images)):
        draw.text((PAD, top + r * cell_h + PAD), _fit(draw, label, font, left - 2 * PAD),
                  fill="black", font=font)
        for c, image in enumerate(row):
            grid.paste(image.convert("RGB"), (left + c * cell_w, top + r * cell_h))
    return grid


def save_png(image: Image.Image, path: Path, parameters: str) -> Path:
    """The PNG with a ``parameters`` text chunk, written atomically."""
    import io
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path
