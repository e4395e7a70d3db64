"""Open training images robustly: every file either becomes an 8-bit RGB picture
the right way up, or an `ImageLoadError` whose message names the file and says
what to do. Never a crash in the middle of a run because of one bad file.

Handled: zero-byte, corrupt and truncated files (refused), CMYK, 16-bit and
float images (converted), palette / grey / alpha images (composited on white,
the usual choice for transparent PNG cut-outs), EXIF orientation (applied),
animated GIF / WebP / AVIF and multi-page TIFF (the first frame), anything but a
regular file (refused unopened).
"""
from __future__ import annotations

import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError



class ImageLoadError(Exception):
    def __init__(self, path: Path, problem: str, hint: str):
        self.path = Path(path)
        self.problem = problem
        self.hint = hint
        super().__init__(f"{self.path}: {problem}. {hint}")


@dataclass(frozen=True)
class SkippedImage:
    path: Path
    message: str


def _open(path: Path) -> Image.Image:
    try:
        st = path.stat()
    except OSError as exc:
        raise ImageLoadError(path, f"cannot be read ({exc.strerror or exc})",
                             "Check that the file exists and is not locked by another program.") from exc
    if not stat.S_ISREG(st.st_mode):  # opening a pipe would block forever
        raise ImageLoadError(path, "is a pipe, a device or a socket, not a regular file",
                             "Replace it with a real image file; it is skipped.")
    if st.st_size == 0:
        raise ImageLoadError(path, "is empty (0 bytes)",
                             "Delete it or copy the image again; it is skipped.")
    try:
        with warnings.catch_warnings():
            # Pillow warns (DecompressionBombWarning) before it refuses; the error path covers it.
            warnings.simplefilter("ignore")
            return Image.open(path)
    except UnidentifiedImageError as exc:
        raise ImageLoadError(path, "is not an image Pillow can read (corrupt or unknown format)",
                             "Open it in an image editor and save it again as PNG or JPEG; "
                             "it is skipped.") from exc
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(path, f"cannot be opened ({exc})",
                             "Save it again as PNG or JPEG; it is skipped.") from exc


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit ('I;16', 'I') and float ('F') images scaled into 0-255 greyscale."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        top = arr.max() if arr.size and arr.max() > 1.0 else 1.0
        arr = arr / top * 255.0
    elif arr.size and arr.max() > 255:
        arr = arr / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), mode="L")


def _flatten(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img).convert("RGB")
    if img.mode == "CMYK":
        # Pillow's CMYK->RGB ignores ICC profiles; close enough for training data.
        return img.convert("RGB")
    return img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """The image as 8-bit RGB, upright. Raises ImageLoadError for unusable files."""
    path = Path(path)
    img = _open(path)
    try:
        with img:
            img.load()
            try:
                upright = ImageOps.exif_transpose(img)
            except Exception:  # a malformed EXIF block: keep the pixels as stored
                upright = img
            rgb = _flatten(upright)
            rgb.load()
            return rgb
    except ImageLoadError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        what = "is truncated (the download or copy was cut short)" if "truncated" in str(exc) \
            else f"cannot be decoded ({exc})"
        raise ImageLoadError(path, what, "Copy the image again or remove it; it is skipped.") from exc


def check_images(paths: list[Path], progress: Callable[[int, int], None] | None = None
                 ) -> tuple[dict[Path, tuple[int, int]], list[SkippedImage]]:
    """Sizes of the usable images and a named warning for each file that is not.
    Fully decodes each file so a truncated one is caught before training starts;
    ``progress(done, total)`` is called before each file and at the end."""
    sizes: dict[Path, tuple[int, int]] = {}
    skipped: list[SkippedImage] = []
    for done, path in enumerate(paths):
        if progress is not None:
            progress(done, len(paths))
        try:
            sizes[path] = load_rgb(path).size
        except ImageLoadError as exc:
            skipped.append(SkippedImage(path, str(exc)))
    if progress is not None:
        progress(len(paths), len(paths))
    return sizes, skipped
