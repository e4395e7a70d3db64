"""Settings a shared preset should not carry in silently: they load code (pickle),
run a stranger's template, or write outside the runs folder. `check` reports them;
`import_preset` keeps them only when the user trusts the file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

from ..data.chat_template import is_custom
from .fields import SPECS, get_in

# Windows refuses these as file or folder names, with any extension, in any case.
WINDOWS_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$",
                              *(f"COM{i}" for i in "123456789¹²³"),
                              *(f"LPT{i}" for i in "123456789¹²³")})


@dataclass(frozen=True)
class Risk:
    path: str      # dotted setting
    rule: str
    message: str   # what the setting does, in plain words
    hint: str


def output_name_problem(name: str) -> str | None:
    """Why `name` cannot be a run folder's and an export's name on every system, or None."""
    if name.strip(" .") == "":
        return f"'{name}' is not a name but a reference to a folder"
    if name != name.rstrip(" ."):
        return f"'{name}' ends with a dot or a space, which Windows drops from names"
    if name.split(".")[0].strip().upper() in WINDOWS_RESERVED:
        return f"'{name}' is a name Windows reserves for a device"
    return None


def _leaves_runs_folder(value: str) -> bool:
    text = value.strip()
    if not text or text.startswith("~"):
        return bool(text)
    windows, posix = PureWindowsPath(text), PurePosixPath(text)
    return windows.is_absolute() or posix.is_absolute() or bool(windows.drive) or \
        ".." in windows.parts or ".." in posix.parts


def _chars(text: str) -> str:
    return f"{len(text):,} character{'s' if len(text) != 1 else ''}"


def risks(data: dict) -> list[Risk]:
    """The risky settings of a preset's data (section -> key -> value), in schema order."""
    found = []
    if get_in(data, "model.allow_pickle") is True:
        found.append(Risk("model.allow_pickle", "preset-allows-pickle",
                          "It turns on 'Allow pickle checkpoints': .ckpt / .pt / .bin files are then "
                          "loaded, and a pickle file can carry code.",
                          "Keep it only if you trust where the model file came from; LoRA Studio "
                          "still loads pickles with torch's weights-only loader."))
    template = get_in(data, "dataset.chat_template")
    if isinstance(template, str) and is_custom(template):
        found.append(Risk("dataset.chat_template", "preset-custom-template",
                          f"It brings its own chat template ({_chars(template)} of Jinja) instead of "
                          "the model's.",
                          "Keep it if you know why it is there; it runs sandboxed, with a time and "
                          "size budget. 'auto' uses the model's own template."))
    out_dir = get_in(data, "output.output_dir")
    if isinstance(out_dir, str) and _leaves_runs_folder(out_dir):
        found.append(Risk("output.output_dir", "preset-output-elsewhere",
                          f"It writes its runs to '{out_dir}', a place of its choosing rather than a "
                          "folder beside the preset.",
                          f"Keep it only if that is where you want runs; the default is "
                          f"'{SPECS['output.output_dir'].default}'."))
    name = get_in(data, "output.output_name")
    if isinstance(name, str) and (problem := output_name_problem(name)):
        found.append(Risk("output.output_name", "output-name-reserved", problem + ".",
                          "Pick a plain name such as my_lora."))
    return found

