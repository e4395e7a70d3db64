"""Entry point of the packaged app (PyInstaller's script).

In a bundle, ``sys.executable`` is the app itself, not a Python interpreter, yet the
GUI starts the engine as ``sys.executable -m lora_studio.engine RUN_DIR`` and
accelerate / torch.distributed start their workers as ``sys.executable -u -m MODULE``
or ``sys.executable -u SCRIPT``. So the bundle understands those few interpreter
forms itself; everything else is the ``lora-studio`` command line.
"""
from __future__ import annotations

import multiprocessing
import runpy
import sys


def _run_interpreter_form(argv: list[str]) -> bool:
    """Handle ``[-u] -m MODULE ARGS`` and ``[-u] SCRIPT.py ARGS``; False when argv is neither."""
    args = argv[1:]
    if args[:1] == ["-u"]:
        args = args[1:]
        # -u means unbuffered: the parent reads our events line by line.
        sys.stdout.reconfigure(write_through=True)
        sys.stderr.reconfigure(write_through=True)
    if len(args) >= 2 and args[0] == "-m":
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        return True
    if args and args[0].endswith(".py"):
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")
        return True
    return False


def main() -> int:
    # Windows bundles start DataLoader / multiprocessing children through this exe.
    multiprocessing.freeze_support()
    if _run_interpreter_form(sys.argv):
        return 0
    from lora_studio.cli import main as cli_main
    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())
