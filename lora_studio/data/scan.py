"""Fast dataset scans: list what a dataset holds without decoding any image or
parsing any record, so it can run on every change in the UI.

Image datasets follow the kohya convention::

    dataset/
      photo1.png  photo1.txt      images in the root use the job's default repeats
      10_sks dog/                 'N_name' sub-folder: every image in it counts N times
        a.jpg  a.txt              the caption is beside the image, same stem
        more/b.webp               deeper folders inherit the repeats of their top folder
      0_unused/                   zero repeats: the folder is skipped (and reported)

Folder names without an ``N_`` prefix use the default repeats. Hidden files and
folders (starting with '.') are skipped. Caption files are only paired here, never
read in full and never written (see captions.py for reading and editing them).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import HintedError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
TEXT_RECORD_EXTENSIONS = frozenset({".jsonl", ".json", ".txt"})  # as text_records.py reads
_REPEAT_FOLDER = re.compile(r"^(\d+)_(.+)$")
_BLANK_CHECK_BYTES = 8  # captions this small are read to tell blank (BOM, spaces) from short


class DatasetError(HintedError):
    """The dataset cannot be scanned. `reason`: missing, not_a_folder, unreadable, wrong_format."""


@dataclass(frozen=True)
class ImageItem:
    image_path: Path
    caption_path: Path | None  # None: no caption file beside the image
    repeats: int
    folder: str                # top-level sub-folder name ("10_sks dog"); "" for the root
    caption_empty: bool = False  # the caption file holds only blanks


@dataclass(frozen=True)
class ConceptFolder:
    name: str       # folder name as on disk, "" for the dataset root
    repeats: int
    images: int


@dataclass(frozen=True)
class ImageDataset:
    root: Path
    caption_extension: str
    items: tuple[ImageItem, ...]
    folders: tuple[ConceptFolder, ...]   # only folders holding images
    skipped_folders: tuple[str, ...]     # '0_name' folders

    @property
    def images(self) -> int:
        return len(self.items)

    @property
    def uncaptioned_items(self) -> list[ImageItem]:
        return [i for i in self.items if i.caption_path is None]

    @property
    def empty_caption_items(self) -> list[ImageItem]:
        return [i for i in self.items if i.caption_empty]

    @property
    def captioned(self) -> int:
        return self.images - self.uncaptioned

    @property
    def uncaptioned(self) -> int:
        return len(self.uncaptioned_items)

    @property
    def samples_per_epoch(self) -> int:
        """Images times their repeats: how many samples one epoch trains on."""
        return sum(i.repeats for i in self.items)


def is_image_file(name: str | os.PathLike) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def normalize_caption_extension(extension: str) -> str:
    """'txt', ' .txt ' -> '.txt' (case kept: it is matched exactly first)."""
    ext = extension.strip()
    return ext if ext.startswith(".") else "." + ext


def parse_repeat_folder(name: str, default_repeats: int) -> tuple[int, str]:
    """'10_sks dog' -> (10, 'sks dog'); 'dogs' -> (default_repeats, 'dogs')."""
    match = _REPEAT_FOLDER.match(name)
    if match:
        return int(match.group(1)), match.group(2)
    return default_repeats, name


def caption_path_for(image_path: str | os.PathLike, caption_extension: str = ".txt") -> Path:
    """Where the caption of an image is expected: beside it, same stem."""
    image_path = Path(image_path)
    return image_path.with_name(image_path.stem + normalize_caption_extension(caption_extension))


def _is_blank_caption(path: Path, size: int) -> bool:
    if size > _BLANK_CHECK_BYTES:
        return False
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return not data.removeprefix(b"\xef\xbb\xbf").strip()


def _scan_folder(folder: Path, caption_ext: str, repeats: int, concept: str) -> list[ImageItem]:
    """Images directly inside `folder`, paired with their captions."""
    files: dict[str, os.DirEntry] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if not entry.name.startswith(".") and entry.is_file():
                    files[entry.name] = entry
    except OSError as exc:
        raise DatasetError("unreadable", f"Cannot read the folder '{folder}': {exc.strerror or exc}.",
                           "Check that the folder exists and that you may open it.") from None
    by_folded = {name.casefold(): entry for name, entry in files.items()}
    items = []
    for name in sorted(files, key=str.casefold):
        if not is_image_file(name):
            continue
        wanted = os.path.splitext(name)[0] + caption_ext
        caption = files.get(wanted) or by_folded.get(wanted.casefold())
        caption_path = folder / caption.name if caption else None  # joining beats re-parsing
        blank = bool(caption) and _is_blank_caption(caption_path, caption.stat().st_size)
        items.append(ImageItem(folder / name, caption_path, repeats, concept, blank))
    return items


def scan_images(root: str | os.PathLike, caption_extension: str = ".txt",
                default_repeats: int = 1) -> ImageDataset:
    """List the images of a kohya-style dataset folder with their captions and repeats.
    Decodes nothing; raises DatasetError when the folder is missing or unreadable."""
    root = Path(root)
    if not root.exists():
        raise DatasetError("missing", f"The dataset folder '{root}' does not exist.",
                           "Check the path, or pick the folder with the Browse button.")
    if not root.is_dir():
        raise DatasetError("not_a_folder", f"'{root}' is a file, but an image dataset is a folder.",
                           "Pick the folder that contains your images (or their N_name sub-folders).")
    caption_ext = normalize_caption_extension(caption_extension)
    items = _scan_folder(root, caption_ext, default_repeats, "")
    folders = [ConceptFolder("", default_repeats, len(items))] if items else []
    skipped = []
    with os.scandir(root) as entries:
        subfolders = sorted((e for e in entries if e.is_dir() and not e.name.startswith(".")),
                            key=lambda e: e.name.casefold())
    for sub in subfolders:
        repeats, _ = parse_repeat_folder(sub.name, default_repeats)
        if repeats == 0:
            skipped.append(sub.name)
            continue
        found: list[ImageItem] = []
        for dirpath, dirnames, _files in os.walk(sub.path):
            dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=str.casefold)
            found.extend(_scan_folder(Path(dirpath), caption_ext, repeats, sub.name))
        if found:
            folders.append(ConceptFolder(sub.name, repeats, len(found)))
            items.extend(found)
    return ImageDataset(root, caption_ext, tuple(items), tuple(folders), tuple(skipped))


def _count_file_records(path: Path) -> int:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            with open(path, "rb") as fh:
                return sum(1 for line in fh if line.strip())
        text = path.read_bytes().decode("utf-8-sig")
        if suffix == ".txt":  # one record per blank-line-separated block
            return sum(1 for block in re.split(r"\n[ \t\r]*\n", text) if block.strip())
        data = json.loads(text)
    except OSError as exc:
        raise DatasetError("unreadable", f"Cannot read '{path}': {exc.strerror or exc}.",
                           "Check that the file exists and that you may open it.") from None
    except UnicodeDecodeError:
        raise DatasetError("unreadable", f"'{path.name}' is not UTF-8 text.",
                           "Save it as UTF-8 (most editors offer this under 'Save as').") from None
    except json.JSONDecodeError as exc:
        raise DatasetError("unreadable", f"'{path.name}' is not valid JSON (line {exc.lineno}, "
                           f"column {exc.colno}: {exc.msg}).",
                           "Fix the file at that place; a JSON dataset is one list of records "
                           "[{...}, {...}].") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if isinstance(data, list):
        return len(data)
    raise DatasetError("wrong_format", f"'{path.name}' does not hold a list of records.",
                       'A JSON dataset is a list of records [{...}, {...}] or {"data": [...]}. '
                       "For one record per line, use a .jsonl file.")


def text_record_files(path: str | os.PathLike) -> list[Path]:
    """The .jsonl / .json / .txt files a text dataset path stands for (a file, or a folder's files)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError("missing", f"The dataset '{path}' does not exist.",
                           "Check the path, or pick the file with the Browse button.")
    if path.is_file():
        if path.suffix.lower() not in TEXT_RECORD_EXTENSIONS:
            raise DatasetError("wrong_format", f"'{path.name}' is not a .jsonl, .json or .txt file.",
                               "Text datasets are .jsonl (one JSON record per line), .json or "
                               ".txt files.")
        return [path]
    files = sorted((p for p in path.rglob("*") if p.suffix.lower() in TEXT_RECORD_EXTENSIONS
                    and p.is_file() and not any(part.startswith(".") for part in
                                                p.relative_to(path).parts)),
                   key=lambda p: str(p).casefold())
    if not files:
        raise DatasetError("wrong_format", f"The folder '{path}' has no .jsonl, .json or .txt files.",
                           "Put your text records in .jsonl / .json files, or pick the file itself.")
    return files


def count_text_records(path: str | os.PathLike) -> int:
    """Records in a text dataset: non-blank lines of .jsonl, list length of .json,
    blank-line-separated blocks of .txt, summed over a folder's files. Records are not
    parsed (text_records.py does that)."""
    return sum(_count_file_records(p) for p in text_record_files(path))
