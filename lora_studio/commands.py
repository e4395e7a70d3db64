"""The logic behind ``lora-studio train``, ``demo`` and ``export``: build the run
folder, run the engine in this process (or several through accelerate), and draw
its events on the terminal. Torch is imported only when training starts, so the
other commands stay fast."""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from .config.fields import get_in, set_in
from .config.findings import Finding
from .config.jobfile import JobFileError, read_job_toml, write_job_toml
from .config.paths import resolve_local_path
from .config.presets import RELATIVE_TO_PRESET, builtin_dir, read_preset
from .config.schema import JobConfig
from .runs.layout import RunDir, new_run_dir
from .runs.terminal import TerminalProgress

DEMO_PRESETS = {"text": "demo-text-tiny.toml", "image": "demo-image-tiny.toml"}


def anchor_paths(data: dict, base_dir: Path) -> dict:
    """Make model / dataset paths that exist relative to the preset absolute, so the
    run's job.toml works from anywhere."""
    for key in RELATIVE_TO_PRESET:
        value = get_in(data, key)
        if isinstance(value, str) and value:
            found = resolve_local_path(value, base_dir)
            if found is not None:
                set_in(data, key, str(found.resolve()))
    return data


def job_from_preset(preset_path: Path, overrides: list[str]) -> tuple[JobConfig, list[Finding]]:
    from .config.fields import apply_overrides
    from .config.validate import check
    from .hardware.monitor import machine_gpu
    preset = read_preset(preset_path)
    data = anchor_paths(apply_overrides(preset.data, overrides), preset.base_dir)
    job, findings = check(data, gpu=machine_gpu(), base_dir=preset.base_dir)
    return job, preset.findings + findings


def start_run(job: JobConfig, run: RunDir, resume: Path | None = None,
              own_process: bool = False) -> dict | None:
    """In this process, or, for several processes, through accelerate launch.
    ``own_process``: this process ends after the run (engine/lean_imports.py)."""
    if job.training.processes <= 1:
        from .engine.run import run_in_process
        if own_process:
            from .engine.lean_imports import skip_unneeded
            skip_unneeded(job)
        return run_in_process(job, run, resume)
    from .runs.launch import engine_command, follow_engine
    command = engine_command(run.root, job.training.processes, job.training.mixed_precision, resume)
    return follow_engine(command, run, TerminalProgress())


def exit_code(last: dict | None) -> int:
    return 0 if last is not None and last["type"] == "finished" else 1


def train(preset_path: Path | None, overrides: list[str], resume: Path | None,
          print_findings: Callable[[list[Finding]], None], own_process: bool = False) -> int:
    """``lora-studio train``: 0 finished or cancelled, 1 errors in the job or the run.
    ``own_process``: the command's own process, which ends after the run."""
    if resume is not None:
        from .engine.core.checkpoint import resolve_resume
        from .engine.core.control import EngineError
        try:
            checkpoint = resolve_resume(resume)
        except EngineError as exc:
            print(f"{exc.message}\n  hint: {exc.hint}", file=sys.stderr)
            return 1
        run = RunDir(checkpoint.parent.parent)
        job, findings = read_job_toml(run.job_toml)
        if any(f.level == "error" for f in findings):
            print_findings(findings)
            return 1
        print(f"Resuming {run.root} from {checkpoint.name}")
        return exit_code(start_run(job, run, checkpoint, own_process))
    assert preset_path is not None
    job, findings = job_from_preset(preset_path, overrides)
    if findings:
        print_findings(findings)
    if any(f.level == "error" for f in findings):
        return 1
    run = new_run_dir(Path(job.output.output_dir).absolute(), job.output.output_name)
    write_job_toml(job, run.job_toml)
    return exit_code(start_run(job, run, own_process=own_process))


def demo(kind: str, overrides: list[str], print_findings: Callable[[list[Finding]], None],
         own_process: bool = False) -> int:
    """``lora-studio demo text``: train the bundled tiny model on the bundled data."""
    return train(builtin_dir() / DEMO_PRESETS[kind], overrides, None, print_findings, own_process)


def export(run_dir: Path, fmt: str | None, output: Path | None = None, name: str | None = None,
           precision: str | None = None, target: str | None = None) -> int:
    """``lora-studio export``: what the target (or the format's targets) cannot take, then
    one line per file written, "PATH  (FORMAT, SHA-256 HEX)", and the ``ollama create``
    command when a Modelfile was written, the onnxruntime check of an ONNX export, the
    round trip of a merged or GGUF export (verify.json). A blocking finding writes nothing."""
    from .engine.core.control import EngineError
    from .engine.exports import export_run
    from .runs.export_check import FORMAT_TARGETS, TARGET_FORMAT, check_run, describe
    from .runs.exports import COMFYUI_NOTE, run_family
    from .runs.modelfile import MODELFILE, ollama_command
    from .runs.onnx_check import ONNX_CHECK, check_line
    from .runs.roundtrip import VERIFY, verify_lines
    run = RunDir(Path(run_dir))
    if target is not None:
        if run_family(run) != "text":
            print(f"--target is for text runs; {run.root} is not one.\n  hint: leave --target "
                  "out and pick a --format.", file=sys.stderr)
            return 1
        fmt = fmt or TARGET_FORMAT[target]
    if run_family(run) == "text" and run.job_toml.exists():
        targets = [target] if target else list(FORMAT_TARGETS.get(fmt or "peft", ()))
        findings = [f for t in targets for f in check_run(run, t)]
        if findings:
            print(describe(findings), file=sys.stderr)
        if any(f.blocking for f in findings):
            print("Nothing was written.", file=sys.stderr)
            return 1
    try:
        written = export_run(run_dir, fmt, output, name, precision)
    except EngineError as exc:
        print(f"{exc.message}\n  hint: {exc.hint}", file=sys.stderr)
        return 1
    for done in written:
        print(f"{done.path}  ({done.format}, SHA-256 {done.sha256})")
    for done in written:
        if done.path.name == MODELFILE:
            print(f"Ollama: {ollama_command(_output_name(run, name), done.path)}")
        if done.path.name == ONNX_CHECK:
            print(check_line(done.path))
        if done.path.name == VERIFY:
            print("\n".join(verify_lines(done.path)))
        if done.format == "diffusers":
            print(COMFYUI_NOTE)
    return 0


def compare(run_dir: Path, records: int, top: int, against: Path | None = None) -> int:
    """``lora-studio compare``: the held-out records whose answers the adapter changed
    most, base (or the ``against`` run's adapter) and adapter side by side, also kept as
    RUN_DIR/compare.json for the Runs tab."""
    from .engine.core.control import EngineError
    from .engine.text.compare import compare_run, side_by_side
    from .runs.compare_file import write_comparison
    if records < 1 or top < 1:
        print("--records and --top must be at least 1.", file=sys.stderr)
        return 1
    try:
        comparison = compare_run(run_dir, records, top, against)
    except EngineError as exc:
        print(f"{exc.message}\n  hint: {exc.hint}", file=sys.stderr)
        return 1
    print(side_by_side(comparison.found, *(("base", "adapter") if against is None else
                                           (comparison.before, comparison.after))))
    print(f"\nWritten to {write_comparison(run_dir, comparison)}")
    return 0


def _output_name(run: RunDir, name: str | None) -> str:
    if name:
        return name
    try:
        return read_job_toml(run.job_toml)[0].output.output_name
    except JobFileError:
        return run.root.name


def serve(adapters: list[str], base: str | None, host: str, port: int, api_key: str | None,
          allow_origins: list[str]) -> int:
    """``lora-studio serve``: load the base and the adapters in a playground process,
    then answer OpenAI chat requests until Ctrl+C or SIGTERM. 1 when they cannot load."""
    import signal

    from .errors import HintedError
    from .serve.catalog import build_catalog
    from .serve.gateway import Gateway
    from .serve.http_server import OpenAIServer, is_loopback
    try:
        catalog = build_catalog(adapters, base)
    except HintedError as exc:
        print(f"{exc.message}\n  hint: {exc.hint}", file=sys.stderr)
        return 1
    if not is_loopback(host):
        print(f"warning: --host {host} lets other computers on the network use these models"
              + ("." if api_key else " without a key; set --api-key (or LORA_STUDIO_API_KEY)."),
              file=sys.stderr)
    gateway = Gateway(catalog)   # nothing starts before gateway.start()
    try:
        server = OpenAIServer(gateway, host, port, api_key, tuple(allow_origins))
    except OSError as exc:
        print(f"Cannot listen on {host}:{port}: {exc.strerror or exc}\n  hint: pick another "
              "--port (0 takes a free one) or stop what uses it.", file=sys.stderr)
        return 1

    def terminate(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        print(f"Loading {catalog.base} and {len(catalog.models) - 1} adapter(s)...", flush=True)
        try:
            gateway.start()
        except HintedError as exc:
            print(f"{exc.message}\n  hint: {exc.hint}", file=sys.stderr)
            return 1
        print(f"Serving at {server.url}  (OpenAI API: /models, /chat/completions; Ctrl+C stops)",
              flush=True)
        for model_id in catalog.ids:
            print(f"  model: {model_id}", flush=True)
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        print("Stopped.", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
        gateway.close()
    return 0
