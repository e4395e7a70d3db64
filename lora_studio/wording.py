"""Counts in the words users read: one place for the plural, so no message says "1 images"."""


def plural(n: int, word: str) -> str:
    """'1 image', '3 images' (words whose plural adds an s)."""
    return f"{n} {word}{'' if n == 1 else 's'}"
