"""Whether a name can be a file or folder name on every platform a run folder may be
copied to: Windows forbids some characters and device names, and drops a trailing
dot or space, so a name fine on Linux can be lost there."""
from __future__ import annotations

FORBIDDEN = '<>:"/\\|?*'
RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
            *(f"LPT{i}" for i in range(1, 10))}
MAX_LENGTH = 120


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a portable file or folder name, or None when it can."""
    if not name.strip():
        return "The name is empty."
    bad = sorted({c for c in name if c in FORBIDDEN or ord(c) < 32})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        return f"The name contains {shown}, which Windows does not allow in file names."
    if name != name.rstrip(". "):
        return "The name ends with a dot or a space, which Windows drops."
    if name.startswith(" "):
        return "The name starts with a space."
    if name.split(".")[0].upper() in RESERVED:
        return f"'{name.split('.')[0]}' is a device name on Windows and cannot name a file."
    if len(name) > MAX_LENGTH:
        return f"The name is {len(name)} characters long; at most {MAX_LENGTH}."
    return None
