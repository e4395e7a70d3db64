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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import HintedError
from .captions import CAPTION_MAX_BYTES, CaptionDecodeError, decode_caption
from .walk import (Listing, RefusedFile, Skipped, by_name, claim, files_under, list_folder,
                   not_a_file, open_regular, read_regular, too_large, walk)

# What training loads (Pillow decodes all of these; an animated GIF trains on its first frame).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp",
                              ".gif", ".tif", ".tiff", ".avif"})
# Pictures that are not trained on: found, counted and named, never dropped silently.
OTHER_PICTURE_EXTENSIONS = frozenset({
    ".apng", ".psd", ".tga", ".ico", ".icns", ".jp2", ".j2k", ".jpx", ".pcx", ".ppm", ".pgm",
    ".pbm", ".pnm", ".dds", ".qoi", ".sgi", ".xbm", ".xpm", ".heic", ".heif", ".jxl", ".svg",
    ".exr", ".hdr", ".dng", ".cr2", ".nef", ".arw", ".raw", ".eps", ".avifs"})
# As text_records.py reads them, and the tables text_sources.py reads through `datasets`.
TEXT_RECORD_EXTENSIONS = frozenset({".jsonl", ".json", ".txt", ".csv", ".parquet", ".arrow"})
MAX_REPEATS = 1000  # dataset.repeats' own maximum (config/schema.py); a test keeps them equal
_REPEAT_FOLDER = re.compile(r"^(\d+)_(.+)$")
_BLANK_CHECK_BYTES = 8  # captions this small are read to tell blank (BOM, spaces) from short


class DatasetError(HintedError):
    """The dataset cannot be scanned. `reason`: missing, not_a_folder, unreadable, wrong_format."""


class RepeatPrefixError(ValueError):
    """A folder's 'N_' prefix asks for more repeats than MAX_REPEATS."""


@dataclass(frozen=True)
class ImageItem:
    image_path: Path
    caption_path: Path | None  # None: no caption file beside the image
    repeats: int
    folder: str                # top-level sub-folder name ("10_sks dog"); "" for the root
    caption_empty: bool = False  # the caption file holds only blanks
    class_tokens: str = ""     # the folder's name after 'N_' ("sks dog"); "" for the root
    is_reg: bool = False       # a regularisation image (see reg_images.py)
    subset: int = -1           # its dataset.subsets line (see subsets.py); -1: none


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
    problems: tuple[Skipped, ...] = ()   # everything else not used, each with its reason

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

    def problems_of(self, kind: str) -> list[Skipped]:
        return [p for p in self.problems if p.kind == kind]

    @property
    def bad_repeat_folders(self) -> list[Skipped]:
        """Folders whose 'N_' prefix is over MAX_REPEATS: not scanned, and not trainable."""
        return self.problems_of("repeats_too_large")

    @property
    def unsupported_formats(self) -> dict[str, int]:
        """Files skipped for their format, per extension: {".psd": 3}."""
        return dict(sorted(Counter(p.path.suffix.lower()
                                   for p in self.problems_of("unsupported_format")).items()))


def is_image_file(name: str | os.PathLike) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_other_picture(name: str | os.PathLike) -> bool:
    return os.path.splitext(name)[1].lower() in OTHER_PICTURE_EXTENSIONS


def normalize_caption_extension(extension: str) -> str:
    """'txt', ' .txt ' -> '.txt' (case kept: it is matched exactly first)."""
    ext = extension.strip()
    return ext if ext.startswith(".") else "." + ext


def parse_repeat_folder(name: str, default_repeats: int) -> tuple[int, str]:
    """'10_sks dog' -> (10, 'sks dog'); 'dogs' -> (default_repeats, 'dogs').
    RepeatPrefixError when the prefix is over MAX_REPEATS."""
    match = _REPEAT_FOLDER.match(name)
    if not match:
        return default_repeats, name
    digits = match.group(1).lstrip("0") or "0"
    # Lengths first: int() of a 400-digit prefix is big, and past 4300 digits it raises.
    if len(digits) > len(str(MAX_REPEATS)) or int(digits) > MAX_REPEATS:
        raise RepeatPrefixError(f"asks for {digits if len(digits) <= 12 else digits[:12] + '...'} "
                                f"repeats, more than the {MAX_REPEATS} allowed")
    return int(digits), match.group(2)


def caption_path_for(image_path: str | os.PathLike, caption_extension: str = ".txt") -> Path:
    """Where the caption of an image is expected: beside it, same stem."""
    image_path = Path(image_path)
    return image_path.with_name(image_path.stem + normalize_caption_extension(caption_extension))


def _is_blank_caption(path: Path, size: int) -> bool:
    if size > _BLANK_CHECK_BYTES:
        return False
    try:
        return not decode_caption(read_regular(path, _BLANK_CHECK_BYTES)[0])[0].strip()
    except (OSError, CaptionDecodeError):
        return False  # the reader names it when the caption is read


def _unsupported(path: Path) -> Skipped:
    return Skipped(path, "unsupported_format", f"is a {path.suffix.lower()} file, a format that "
                   "is not trained on; it was skipped",
                   f"Save it as PNG, JPEG or WebP to train on it ({', '.join(sorted(IMAGE_EXTENSIONS))} "
                   "are used).")


def _caption_of(listing: Listing, image: str, caption_ext: str, by_folded: dict,
                files: dict, problems: list[Skipped]) -> tuple[Path | None, bool]:
    """(caption path or None, blank) of one image."""
    wanted = os.path.splitext(image)[0] + caption_ext
    caption = files.get(wanted) or by_folded.get(wanted.casefold())
    if caption is None:
        return None, False
    path = listing.folder / caption.name  # joining beats re-parsing
    size = caption.stat().st_size
    if size > CAPTION_MAX_BYTES:
        problems.append(too_large(path, size, CAPTION_MAX_BYTES))
    return path, _is_blank_caption(path, size)


def _scan_folder(listing: Listing, caption_ext: str, repeats: int, concept: str,
                 problems: list[Skipped], class_tokens: str = "", is_reg: bool = False
                 ) -> list[ImageItem]:
    """Images directly inside one listed folder, paired with their captions; pipes,
    devices and pictures in formats that are not trained go to `problems`."""
    files = {e.name: e for e in listing.files}
    by_folded = {name.casefold(): entry for name, entry in files.items()}
    folded_ext = caption_ext.casefold()
    problems += listing.refused(lambda n: is_image_file(n) or is_other_picture(n)
                                or n.casefold().endswith(folded_ext))
    items = []
    for name in sorted(files, key=str.casefold):
        if is_other_picture(name):
            problems.append(_unsupported(listing.folder / name))
        if not is_image_file(name):
            continue
        caption, blank = _caption_of(listing, name, caption_ext, by_folded, files, problems)
        items.append(ImageItem(listing.folder / name, caption, repeats, concept, blank,
                               class_tokens, is_reg))
    return items


def _repeat_folder_problem(path: Path, exc: RepeatPrefixError) -> Skipped:
    return Skipped(path, "repeats_too_large", f"{exc}; the folder was not scanned",
                   f"Rename the folder so that its prefix is a number from 1 to {MAX_REPEATS} "
                   f"(e.g. '10_{path.name.partition('_')[2]}'), or raise training epochs instead.")


def _concept_folders(root: Listing, default_repeats: int, seen: set, problems: list[Skipped]
                     ) -> tuple[list[tuple[os.DirEntry, int, str]], list[str]]:
    """(folder, repeats, class tokens) of the top-level folders to scan, and the '0_'
    ones skipped.
    Real folders are claimed before any walk, so one that is also reached through a
    link (from another concept, or a top-level link) trains with its own repeats."""
    scan, zero = [], []
    for sub in by_name(root.dirs):
        try:
            repeats, class_tokens = parse_repeat_folder(sub.name, default_repeats)
        except RepeatPrefixError as exc:
            problems.append(_repeat_folder_problem(Path(sub.path), exc))
            continue
        if repeats == 0:
            zero.append(sub.name)
        elif sub.is_symlink() or claim(Path(sub.path), seen, problems):
            scan.append((sub, repeats, class_tokens))
    return scan, zero


def _list_root(root: Path) -> Listing:
    try:
        return list_folder(root)
    except OSError as exc:
        raise DatasetError("unreadable", f"Cannot read the folder '{root}': {exc.strerror or exc}.",
                           "Check that the folder exists and that you may open it.") from None


def scan_images(root: str | os.PathLike, caption_extension: str = ".txt",
                default_repeats: int = 1, is_reg: bool = False) -> ImageDataset:
    """List the images of a kohya-style dataset folder with their captions and repeats
    (`is_reg`: a regularisation folder, its items marked so).
    Decodes nothing; raises DatasetError when the folder is missing or unreadable.
    Whatever else is not used (an unreadable sub-folder, a pipe named like a caption,
    a .psd, a folder reached twice through a link) is in `problems`, named."""
    root = Path(root)
    if not root.exists():
        raise DatasetError("missing", f"The dataset folder '{root}' does not exist.",
                           "Check the path, or pick the folder with the Browse button.")
    if not root.is_dir():
        raise DatasetError("not_a_folder", f"'{root}' is a file, but an image dataset is a folder.",
                           "Pick the folder that contains your images (or their N_name sub-folders).")
    caption_ext = normalize_caption_extension(caption_extension)
    problems: list[Skipped] = []
    seen: set = set()
    claim(root, seen, problems)
    top = _list_root(root)
    items = _scan_folder(top, caption_ext, default_repeats, "", problems, is_reg=is_reg)
    folders = [ConceptFolder("", default_repeats, len(items))] if items else []
    concepts, zero = _concept_folders(top, default_repeats, seen, problems)
    for sub, repeats, class_tokens in concepts:
        if sub.is_symlink() and not claim(Path(sub.path), seen, problems):
            continue
        found: list[ImageItem] = []
        for listing in walk(Path(sub.path), seen, problems):
            found.extend(_scan_folder(listing, caption_ext, repeats, sub.name, problems,
                                      class_tokens, is_reg))
        if found:
            folders.append(ConceptFolder(sub.name, repeats, len(found)))
            items.extend(found)
    return ImageDataset(root, caption_ext, tuple(items), tuple(folders), tuple(zero),
                        tuple(problems))


def _count_table_rows(path: Path) -> int:
    """Rows of a table without reading it: Parquet and Arrow files say how many; a CSV
    counts its lines (a quoted newline inside a field makes that an estimate)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with open_regular(path) as fh:
            return max(0, sum(1 for line in fh if line.strip()) - 1)
    import pyarrow
    if suffix == ".parquet":
        import pyarrow.parquet
        return pyarrow.parquet.ParquetFile(path).metadata.num_rows
    import pyarrow.ipc
    with pyarrow.memory_map(str(path)) as source:
        try:
            return pyarrow.ipc.open_file(source).read_all().num_rows
        except pyarrow.ArrowInvalid:  # the streaming format `datasets` writes
            source.seek(0)
            return sum(batch.num_rows for batch in pyarrow.ipc.open_stream(source))


def _count_file_records(path: Path) -> int:
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".parquet", ".arrow"):
            return _count_table_rows(path)
        if suffix == ".jsonl":
            with open_regular(path) as fh:
                return sum(1 for line in fh if line.strip())
        text = read_regular(path)[0].decode("utf-8-sig")
        if suffix == ".txt":  # one record per blank-line-separated block
            return sum(1 for block in re.split(r"\n[ \t\r]*\n", text) if block.strip())
        data = json.loads(text)
    except RefusedFile as exc:
        raise _refused(exc.skipped) from None
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
    except ValueError as exc:  # pyarrow's ArrowInvalid: a damaged Parquet or Arrow file
        raise DatasetError("unreadable", f"'{path.name}' cannot be read as a table "
                           f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}).",
                           "Write the file again from the program that made it.") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if isinstance(data, list):
        return len(data)
    raise DatasetError("wrong_format", f"'{path.name}' does not hold a list of records.",
                       'A JSON dataset is a list of records [{...}, {...}] or {"data": [...]}. '
                       "For one record per line, use a .jsonl file.")


def _refused(skipped: Skipped) -> DatasetError:
    return DatasetError("unreadable", f"'{skipped.path}' {skipped.reason}.", skipped.hint)


def _is_record_file(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in TEXT_RECORD_EXTENSIONS


@dataclass(frozen=True)
class TextFiles:
    files: tuple[Path, ...]           # regular record files, in name order
    problems: tuple[Skipped, ...]     # pipes, devices, unreadable folders... passed over


def scan_text_files(path: str | os.PathLike) -> TextFiles:
    """The .jsonl / .json / .txt files a text dataset path stands for (a file, or a
    folder's files, hidden ones left out), and what was passed over on the way."""
    path = Path(path)
    if not path.exists():
        raise DatasetError("missing", f"The dataset '{path}' does not exist.",
                           "Check the path, or pick the file with the Browse button.")
    if not path.is_dir():
        return TextFiles((_single_record_file(path),), ())
    problems: list[Skipped] = []
    files = sorted(files_under(path, _is_record_file, problems), key=lambda p: str(p).casefold())
    if not files:
        passed = f" Passed over: {problems[0]}" if problems else ""
        raise DatasetError("wrong_format", f"The folder '{path}' has no .jsonl, .json, .txt, "
                           f".csv, .parquet or .arrow files.{passed}",
                           "Put your text records in .jsonl / .json files, or pick the file itself.")
    return TextFiles(tuple(files), tuple(problems))


def _single_record_file(path: Path) -> Path:
    if not path.is_file():
        raise _refused(not_a_file(path))
    if not _is_record_file(path.name):
        raise DatasetError("wrong_format", f"'{path.name}' is not a .jsonl, .json, .txt, .csv, "
                           ".parquet or .arrow file.",
                           "Text datasets are .jsonl (one JSON record per line), .json or .txt "
                           "files, or tables (.csv, .parquet, .arrow) read through datasets.")
    return path


def text_record_files(path: str | os.PathLike) -> list[Path]:
    """The regular record files of a text dataset path (see scan_text_files)."""
    return list(scan_text_files(path).files)


def count_records(files: TextFiles) -> int:
    """Records in a text dataset's files: non-blank lines of .jsonl, list length of
    .json, blank-line-separated blocks of .txt. Records are not parsed (text_records.py
    does that)."""
    return sum(_count_file_records(p) for p in files.files)


def count_text_records(path: str | os.PathLike) -> int:
    return count_records(scan_text_files(path))
