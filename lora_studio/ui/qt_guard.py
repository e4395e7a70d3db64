"""A guard against PySide6 releases that hand back ``None`` and ``True`` without a
reference (seen in 6.12.0): every call of a void Qt method from Python (a
QPainter.setPen in each pyqtgraph paint, a setText...) lowers None's reference
count by one, and every ``Signal.emit()`` True's. On CPython before 3.12, where
None and True are not immortal, the interpreter then aborts ("none_dealloc",
"bool_dealloc") after some thousands of calls: a live plot ended the app within
a minute.

The leaks are measured once, at import; where one is present, the object gets a
reference count no session can use up. Nothing changes on fixed PySide6 releases
or on Python 3.12+.
"""
from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

from PySide6.QtCore import QObject, Signal

PINNED = 1 << 40  # calls a session would need before the count could reach zero
PROBES = 64


class _Probe(QObject):
    ping = Signal()


def leaks(obj: object, call: Callable[[], object]) -> bool:
    """Whether calling `call` PROBES times loses references to `obj`."""
    before = sys.getrefcount(obj)
    for _ in range(PROBES):
        call()
    return sys.getrefcount(obj) <= before - PROBES // 2


def guard_refcounts() -> list[str]:
    """Pin the reference count of each singleton PySide6 leaks; their names."""
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 12):
        return []  # None and True are immortal there
    probe = _Probe()
    pinned = []
    for name, obj, call in (("None", None, lambda: probe.setObjectName("probe")),
                            ("True", True, probe.ping.emit)):
        if leaks(obj, call):
            # ob_refcnt is the first field of every CPython object, at id(obj).
            ctypes.c_ssize_t.from_address(id(obj)).value += PINNED
            pinned.append(name)
    return pinned
