"""The ``lora-studio`` command: the GUI without arguments, subcommands otherwise.

Each subcommand is one ``add_<name>(subparsers)`` function that declares its
arguments and sets ``run`` to a ``cmd_<name>(args) -> int``; SUBCOMMANDS lists them.
Exit codes: 0 fine, 1 the job has errors, 2 the command could not run (bad file,
bad --set, missing GUI); a message is printed instead of a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Callable

from .config.fields import SPECS, OverrideError, apply_overrides
from .config.findings import Finding
from .config.gpu import GpuFacts
from .config.presets import (PresetError, PresetFile, find_preset, import_preset, list_presets,
                             read_preset)
from .config.validate import check
from .wording import plural

DEBUG_ENV = "LORA_STUDIO_DEBUG"


class CliError(Exception):
    """A problem the user can fix; printed as is, exit code 2."""


USER_ERRORS = (CliError, PresetError, OverrideError, OSError)

# ---- output ------------------------------------------------------------------

COLOURS = {"error": "31;1", "warning": "33;1", "info": "36", "ok": "32;1", "dim": "2"}


def _use_colour(stream) -> bool:
    return hasattr(stream, "isatty") and stream.isatty() and not os.environ.get("NO_COLOR") \
        and os.environ.get("TERM") != "dumb"


def _paint(text: str, style: str, colour: bool) -> str:
    return f"\033[{COLOURS[style]}m{text}\033[0m" if colour else text


def print_findings(findings: list[Finding], out=None) -> None:
    """Each finding on its own lines (level, field, message, hint), then a summary line."""
    out = out or sys.stdout
    colour = _use_colour(out)
    order = {"error": 0, "warning": 1, "info": 2}
    for f in sorted(findings, key=lambda f: order[f.level]):
        level = _paint(f"{f.level.upper():<7}", f.level, colour)
        where = f"{f.path}: " if f.path else ""
        print(f"  {level} {where}{f.message}", file=out)
        if f.hint:
            print(_paint(f"          hint: {f.hint}", "dim", colour), file=out)
    counts = {level: sum(f.level == level for f in findings) for level in order}
    summary = f"{plural(counts['error'], 'error')}, {plural(counts['warning'], 'warning')}, " \
              f"{counts['info']} info."
    if counts["error"]:
        print(_paint(f"{summary} Fix the errors before training.", "error", colour), file=out)
    else:
        print(_paint(f"{summary} Ready to train.", "ok", colour), file=out)


# ---- subcommands -------------------------------------------------------------

def cmd_presets(args: argparse.Namespace) -> int:
    infos = list_presets()
    if not infos:
        print("No presets found.")
        return 0
    rows = [(i.meta.name, i.meta.model_family, i.meta.vram_class or "-", i.origin, str(i.path))
            for i in infos]
    header = ("NAME", "FAMILY", "VRAM", "ORIGIN", "FILE")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(4)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])
    for info in infos:
        if info.error:
            print(f"warning: {info.error}", file=sys.stderr)
    return 0


def cmd_presets_import(args: argparse.Namespace) -> int:
    if args.name is not None and not args.name.strip():
        raise CliError("--name is empty; give the imported preset a name, or leave --name out "
                       "to keep the file's own name.")
    result = import_preset(args.file, name=args.name or "", trust=args.trust)
    print(f"Imported {args.file}\n  as {result.path}")
    from .hardware.monitor import machine_gpu
    # What importing found (conversion notes, settings left out), then what check finds.
    findings = list(dict.fromkeys(result.findings + preset_findings(read_preset(result.path), [],
                                                                    machine_gpu())))
    print_findings(findings)
    if result.unsupported:
        print("Not imported (no equivalent in LoRA Studio):")
        for key, value in result.unsupported.items():
            print(f"  {key} = {json.dumps(value, ensure_ascii=False)}")
    return 1 if any(f.level == "error" for f in findings) else 0


def add_presets(sub) -> None:
    p = sub.add_parser("presets", help="list the built-in and your presets, or import one",
                       description="List the built-in presets and yours, with family, VRAM class and file; "
                                   "'presets import FILE' adds a preset to yours.")
    p.set_defaults(run=cmd_presets)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    imp = actions.add_parser("import", help="copy a .toml preset or convert a kohya_ss .json config "
                                            "into your presets",
                             description="Copy a LoRA Studio preset (.toml) or convert a kohya_ss LoRA "
                                         "config (.json) into your preset folder, and print where it "
                                         "was written, what 'check' finds in it and the kohya_ss "
                                         "settings that were not imported. Exit status 1 when the "
                                         "imported preset has errors (it is written all the same); "
                                         "nothing is written when the file cannot be read.")
    imp.add_argument("file", type=Path, metavar="FILE")
    imp.add_argument("--name", metavar="NAME", help="the preset's name (default: the name in the file)")
    imp.add_argument("--trust", action="store_true",
                     help="keep the settings a shared preset should not bring in unasked (allow "
                          "pickle, its own chat template, a runs folder elsewhere); without it they "
                          "are left out and listed")
    imp.set_defaults(run=cmd_presets_import)


def _print_keys() -> None:
    section = ""
    for spec in SPECS.values():
        if spec.path.split(".")[0] != section:
            section = spec.path.split(".")[0]
            print(f"[{section}]")
        default = "(empty)" if spec.default in ("", None, []) else repr(spec.default)
        extra = f"  one of: {', '.join(spec.choices)}" if spec.choices else ""
        print(f"  {spec.path}  ({spec.kind}, default {default}){extra}")
        print(f"      {spec.title}. {spec.help}")


def preset_findings(preset: PresetFile, overrides: list[str], gpu: GpuFacts | None) -> list[Finding]:
    """What ``check`` reports for a preset: reading it, validating it (against ``gpu``
    unless None) and, when it is valid, whether it fits that GPU."""
    data = apply_overrides(preset.data, overrides)
    job, found = check(data, gpu=gpu, base_dir=preset.base_dir)
    findings = preset.findings + found
    if gpu is not None and not any(f.level == "error" for f in found):
        from .hardware.autofit import fit_findings
        findings += fit_findings(job, gpu, base_dir=preset.base_dir)
    return findings


def cmd_check(args: argparse.Namespace) -> int:
    if args.list_keys:
        _print_keys()
        return 0
    if not args.preset:
        raise CliError("check needs a preset file, e.g. lora-studio check presets/demo-text-tiny.toml")
    preset = read_preset(find_preset(args.preset))
    from .hardware.monitor import machine_gpu
    findings = preset_findings(preset, args.set, None if args.no_hardware else machine_gpu())
    print(f"{preset.path}  ({preset.meta.name})")
    print_findings(findings)
    return 1 if any(f.level == "error" for f in findings) else 0


def add_check(sub) -> None:
    p = sub.add_parser("check", help="validate a preset and print what to fix",
                       description="Validate a preset (with optional overrides) and print every finding. "
                                   "Exit status 1 when there are errors.")
    p.add_argument("preset", nargs="?", help="a preset file, or the name of a listed preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set network.rank=8 (repeatable)")
    p.add_argument("--list-keys", action="store_true", help="print every key with its default and help")
    p.add_argument("--no-hardware", action="store_true",
                   help="skip the rules about this machine's GPU (for a preset meant for another computer)")
    p.set_defaults(run=cmd_check)


def cmd_train(args: argparse.Namespace) -> int:
    from . import commands
    if args.resume is None and not args.preset:
        raise CliError("train needs a preset file, e.g. lora-studio train presets/demo-text-tiny.toml")
    preset = find_preset(args.preset) if args.resume is None else None
    overrides = args.set + ([f"training.processes={args.processes}"] if args.processes else [])
    return commands.train(preset, overrides, args.resume, print_findings, args.own_process)


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a preset in a new run folder, with a progress bar",
                       description="Create runs/<name>-<time>/, write job.toml and train it here. "
                                   "Ctrl+C stops after the current step and leaves a checkpoint.")
    p.add_argument("preset", nargs="?", help="a preset file, or the name of a listed preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set training.max_steps=100 (repeatable)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue a run from its latest checkpoint (or from a checkpoint folder)")
    p.add_argument("--processes", type=int, metavar="N",
                   help="train on N GPUs through accelerate launch (same as --set training.processes=N)")
    p.set_defaults(run=cmd_train)


def cmd_demo(args: argparse.Namespace) -> int:
    from . import commands
    return commands.demo(args.kind, args.set, print_findings, args.own_process)


def add_demo(sub) -> None:
    p = sub.add_parser("demo", help="train the bundled tiny model on the CPU in about a minute",
                       description="Train, sample and export the bundled demo, to check that "
                                   "everything works.")
    p.add_argument("kind", choices=["text", "image"], help="which demo")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the demo preset")
    p.set_defaults(run=cmd_demo)


def cmd_export(args: argparse.Namespace) -> int:
    from . import commands
    if args.merged and args.format not in (None, "merged"):
        raise CliError(f"--merged is --format merged; it cannot go with --format {args.format}")
    fmt = "merged" if args.merged else args.format
    if args.kv_cache:
        from .runs.exports import KV_CACHE_FORMAT
        if fmt not in KV_CACHE_FORMAT:
            raise CliError(f"--kv-cache goes with --format {' or '.join(KV_CACHE_FORMAT)}, "
                           f"not {fmt or 'the default format'}")
        fmt = KV_CACHE_FORMAT[fmt]
    return commands.export(args.run_dir, fmt, args.output, args.name, args.precision,
                           args.target)


def add_export(sub) -> None:
    from .runs.export_check import TARGET_FORMAT, TARGETS
    from .runs.exports import FORMATS, PRECISIONS
    formats = "; ".join(f"{family} runs: " + ", ".join(f"{f.name} ({f.label})" for f in found)
                        for family, found in FORMATS.items())
    p = sub.add_parser("export", help="write a run's LoRA to its exports/ folder in a format",
                       description="Write the trained LoRA of RUN_DIR to RUN_DIR/exports/ (or --output) and print "
                                   "each file written with its SHA-256. Formats: " + formats + ".")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--format", metavar="FORMAT",
                   choices=sorted({f.name for found in FORMATS.values() for f in found}),
                   help="one of the formats above; default: the first for the run's family")
    p.add_argument("--merged", action="store_true", help="the same as --format merged")
    p.add_argument("--kv-cache", action="store_true",
                   help="with --format onnx or onnx-fp16: the decoder graph with "
                        "past_key_values inputs and present outputs (the same as --format "
                        "onnx-kv or onnx-kv-fp16)")
    p.add_argument("--output", type=Path, metavar="DIR",
                   help="the folder to write into (created if missing); default: RUN_DIR/exports")
    p.add_argument("--name", metavar="NAME",
                   help="the file (kohya: .safetensors is added) or folder name; default: the "
                        "run's output name. A different file already there is never replaced: "
                        "the export goes beside it as NAME-2")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="save precision of an image LoRA; default: the job's "
                        "output.save_precision, which the run's own export used")
    p.add_argument("--target", choices=TARGETS,
                   help="text runs: check what this runtime cannot take from the adapter "
                        "(DoRA, modules_to_save, embedding LoRA, rank, architecture, a local "
                        "base path) and say the fix; export in its format ("
                        + ", ".join(f"{t}: {f}" for t, f in TARGET_FORMAT.items())
                        + ") unless --format says otherwise. Nothing is written when it "
                        "cannot load the export")
    p.set_defaults(run=cmd_export)


def cmd_compare(args: argparse.Namespace) -> int:
    from . import commands
    return commands.compare(args.run_dir, args.records, args.top, args.against)


def add_compare(sub) -> None:
    p = sub.add_parser("compare", help="what a text run's adapter changed on held-out records",
                       description="Answer up to --records held-out records of RUN_DIR (greedy) "
                                   "with the base model (or --against another run's adapter) "
                                   "and with the run's final adapter, and "
                                   "print the --top records whose ROUGE-L against the record's "
                                   "own answer changed most, the two answers side by side.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--records", type=int, default=16, metavar="N",
                   help="held-out records to answer (default 16)")
    p.add_argument("--top", type=int, default=5, metavar="N",
                   help="records to list (default 5)")
    p.add_argument("--against", type=Path, metavar="OTHER_RUN",
                   help="compare with another run's final adapter on the same base model "
                        "instead of the base model alone")
    p.set_defaults(run=cmd_compare)


def cmd_serve(args: argparse.Namespace) -> int:
    from . import commands
    if not args.adapters and not args.base:
        raise CliError("serve needs the runs or adapter folders to serve, or --base for the "
                       "base model alone, e.g. lora-studio serve runs/my_lora-20260101-120000")
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port {args.port} is not a port (0 to 65535; 0 takes a free one)")
    return commands.serve(args.adapters, args.base, args.host, args.port,
                          args.api_key or os.environ.get(API_KEY_ENV) or None, args.allow_origin)


API_KEY_ENV = "LORA_STUDIO_API_KEY"


def add_serve(sub) -> None:
    from .serve.http_server import DEFAULT_HOST, DEFAULT_PORT
    p = sub.add_parser("serve", help="an OpenAI-compatible chat server for a base model and its "
                                     "adapters",
                       description="Load the base model once with every adapter given and answer "
                                   "OpenAI chat requests (GET /v1/models, POST /v1/chat/completions, "
                                   "streamed or not) at http://HOST:PORT/v1: the base and each "
                                   "adapter are model ids, switched per request without loading "
                                   "the base again. One answer at a time; others wait their turn.")
    p.add_argument("adapters", nargs="*", metavar="ADAPTER",
                   help="a run folder, its final/ or a checkpoint, or a PEFT adapter folder (an "
                        "export); NAME=PATH serves it as model NAME (default: the run's or "
                        "folder's name)")
    p.add_argument("--base", metavar="MODEL",
                   help="the base model folder (or a Hub id in your cache); default: the one the "
                        "runs trained on")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"the address to listen on (default {DEFAULT_HOST}, this computer only); "
                        "0.0.0.0 lets other computers in: set --api-key then")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"the port (default {DEFAULT_PORT}; 0 takes a free one and prints it)")
    p.add_argument("--api-key", metavar="KEY",
                   help="answer only requests with 'Authorization: Bearer KEY' (default: "
                        f"${API_KEY_ENV}, else no key)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="let web pages from ORIGIN (e.g. http://localhost:3210, or *) call the "
                        "server from a browser (CORS); repeatable")
    p.set_defaults(run=cmd_serve)


def cmd_caption(args: argparse.Namespace) -> int:
    from .captioning.__main__ import run
    from .data.scan import DatasetError, caption_path_for, scan_images
    from .engine.core.control import StopRequest
    from .runs.caption_protocol import CaptionTally, eta_text, request_for
    kind, model = ("tagger", args.tagger) if args.tagger else ("captioner", args.captioner)
    try:
        dataset = scan_images(args.dataset, args.caption_extension)
    except DatasetError as exc:
        raise CliError(f"{exc.message} {exc.hint}") from None
    items = dataset.items
    request = request_for(
        kind, model, [it.image_path for it in items],
        [it.caption_path or caption_path_for(it.image_path, dataset.caption_extension)
         for it in items],
        mode=args.mode, trigger=args.trigger, general_threshold=args.general_threshold,
        character_threshold=args.character_threshold,
        exclude=[t.strip() for t in args.exclude.split(",") if t.strip()],
        underscores_to_spaces=not args.keep_underscores, include_rating=args.rating,
        task=args.task, max_new_tokens=args.max_new_tokens, device=args.device)
    tally = CaptionTally(total=len(items))

    def show(ev: dict) -> None:
        tally.add(ev)
        if ev["type"] == "captioned" and ev["action"] == "written":
            left = f"  ({eta_text(ev['eta_s'])} left)" if ev["done"] < ev["total"] else ""
            print(f"[{ev['done']}/{ev['total']}] {Path(ev['caption']).name}: {ev['text']}{left}",
                  flush=True)
        elif ev["type"] == "failed":
            print(f"[{ev['done']}/{ev['total']}] {ev['message']}", file=sys.stderr, flush=True)
    stop = StopRequest()
    with stop.handling_signals():  # Ctrl+C: the caption being written is finished first
        run(request, show, stop)
    print(tally.summary(), file=sys.stderr if tally.status == "error" else sys.stdout)
    return {"completed": 0, "cancelled": 130}.get(tally.status, 1)


def add_caption(sub) -> None:
    from .data.caption_merge import MODES
    p = sub.add_parser("caption", help="tag or describe a dataset's images with a local model",
                       description="Write a caption beside every image of DATASET (kohya N_name "
                                   "folders included) with a WD14 tagger (--tagger, onnxruntime: "
                                   "pip install \"lora-studio[caption]\") or a BLIP / Florence-2 "
                                   "captioner (--captioner). MODEL is a folder or a Hugging Face "
                                   "id already in your cache; nothing is downloaded. Each caption "
                                   "is written as it is made; Ctrl+C stops after the current one.")
    p.add_argument("dataset", type=Path, metavar="DATASET")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--tagger", metavar="MODEL", help="e.g. SmilingWolf/wd-vit-tagger-v3")
    which.add_argument("--captioner", metavar="MODEL",
                       help="e.g. florence-community/Florence-2-base")
    p.add_argument("--mode", choices=MODES, default="skip",
                   help="images that have a caption: skip them (default), append the new tags "
                        "they lack, or overwrite it")
    p.add_argument("--trigger", default="", help="written first in every caption, once")
    p.add_argument("--general-threshold", type=float, default=0.35, metavar="P")
    p.add_argument("--character-threshold", type=float, default=0.85, metavar="P")
    p.add_argument("--exclude", default="", metavar="TAGS", help="comma-separated tags never written")
    p.add_argument("--keep-underscores", action="store_true",
                   help="write long_hair, not long hair")
    p.add_argument("--rating", action="store_true", help="add the tagger's rating tag")
    p.add_argument("--task", default="", help="Florence-2 task (default <MORE_DETAILED_CAPTION>) "
                                              "or how a BLIP caption starts")
    p.add_argument("--max-new-tokens", type=int, default=60, metavar="N")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--caption-extension", default=".txt", metavar="EXT")
    p.set_defaults(run=cmd_caption)


SUBCOMMANDS: tuple[Callable, ...] = (add_presets, add_check, add_train, add_demo, add_export,
                                     add_compare, add_serve, add_caption)

# ---- entry -------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-studio", description="Train LoRA adapters for text and Stable Diffusion models. "
                                        "Without a command, the app window opens.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def launch_gui() -> int:
    # Without a screen Qt aborts the process with a core dump; say what to do instead.
    if sys.platform.startswith("linux") and not any(
            os.environ.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")):
        raise CliError("no display: the app window needs a screen. On a headless machine, train with "
                       "'lora-studio train PRESET' and open the run folder in the app on another machine.")
    from .xcb_libs import xcb_problem
    problem = xcb_problem(os.environ, sys.platform)
    if problem:
        raise CliError(problem)
    try:
        app = importlib.import_module("lora_studio.ui.app")
    except ModuleNotFoundError as exc:
        if exc.name == "lora_studio.ui.app":
            raise CliError("the app window is not part of this installation yet; "
                           "the commands work: run 'lora-studio --help'.") from None
        raise CliError(f"the app window needs {exc.name}, which is not installed. "
                       "Reinstall LoRA Studio: pip install -e .") from None
    return app.main() or 0


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):
        # A Windows console or pipe in cp1252 must not crash on a non-ASCII path.
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    # No argv: this is the lora-studio command itself, and the process is its own (a
    # caller in Python, such as a test, passes argv and keeps its process as it was).
    args.own_process = argv is None
    try:
        code = args.run(args) if args.command else launch_gui()
        sys.stdout.flush()  # a reader that left shows up here, not at exit
        return code
    except BrokenPipeError:  # `lora-studio presets | head -1`: the reader has what it wanted
        # Before USER_ERRORS, which holds OSError. Python flushes stdout again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except USER_ERRORS as exc:
        print(f"lora-studio: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: say so plainly; the traceback on request
        if os.environ.get(DEBUG_ENV):
            traceback.print_exc()
        print(f"lora-studio: internal error: {type(exc).__name__}: {exc}\n"
              f"This is a bug in LoRA Studio. Run again with {DEBUG_ENV}=1 to see the details, "
              "and please report it.", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
