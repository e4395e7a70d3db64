"""A stand-in for ``python -m lora_studio.engine RUN_DIR`` in UI tests and benchmarks:
it streams the same JSON-line events without torch.

    python fake_engine.py RUN_DIR [--resume CHECKPOINT] [--steps N] [--rate EVENTS_PER_S]
                          [--mode ok|crash|oom|hang] [--grandchild keep|detach]

crash: dies with a traceback on stderr and no error event, halfway.
oom:   reports an out-of-memory error event halfway and exits 1.
hang:  after the first step, hangs and ignores STOP (a stuck CUDA call): Stop must kill it.
Otherwise honours RUN_DIR/STOP after each step: writes a COMPLETE checkpoint and ends cancelled;
a STOP there before the first step ends it cancelled with no checkpoint, like the engine.
--grandchild: first starts a process that ignores SIGTERM (an accelerate worker that does
not stop), writing its pid to RUN_DIR/grandchild.pid; "keep" shares this stdout with it,
"detach" gives it none.
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lora_studio.runs.events import EventWriter, event  # noqa: E402
from lora_studio.runs.layout import RunDir  # noqa: E402


def save_checkpoint(run: RunDir, step: int) -> Path:
    folder = run.checkpoints / f"step-{step:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "COMPLETE").write_text("ok\n", encoding="utf-8")
    return folder


GRANDCHILD = ("import os, signal, sys, time\n"
              "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid()))\n"
              "os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
              "while True: time.sleep(1)\n")


def start_grandchild(pid_file: Path, keep_stdout: bool) -> None:
    subprocess.Popen([sys.executable, "-c", GRANDCHILD, str(pid_file)], stdin=subprocess.DEVNULL,
                     stdout=None if keep_stdout else subprocess.DEVNULL)
    while not pid_file.exists():  # it ignores SIGTERM only from now on
        time.sleep(0.01)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--resume")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--mode", default="ok")
    parser.add_argument("--grandchild", choices=["keep", "detach"])
    args = parser.parse_args()
    run = RunDir(Path(args.run_dir)).ensure()
    if args.grandchild:
        start_grandchild(run.root / "grandchild.pid", args.grandchild == "keep")
    first = int(Path(args.resume).name.split("-")[1]) + 1 if args.resume else 1
    emit = EventWriter(run.events, echo=sys.stdout)
    emit(event("started", total_steps=args.steps, resumed_from=args.resume))
    pause = 1.0 / args.rate
    for step in range(first, args.steps + 1):
        if (run.root / "STOP").exists() and step == first:
            emit(event("finished", status="cancelled", step=first - 1, checkpoint=None))
            return 0
        if (run.root / "STOP").exists():
            checkpoint = save_checkpoint(run, step - 1)
            emit(event("checkpoint", step=step - 1, path=str(checkpoint)))
            emit(event("finished", status="cancelled", checkpoint=str(checkpoint)))
            return 0
        if step == args.steps // 2 and args.mode == "crash":
            print("Traceback (most recent call last):\nRuntimeError: fake engine crashed",
                  file=sys.stderr, flush=True)
            return 3
        if step == args.steps // 2 and args.mode == "oom":
            emit(event("error", kind="oom", message="CUDA out of memory (fake).",
                       hint="Lower the batch size or enable gradient checkpointing."))
            return 1
        loss = 2.0 * math.exp(-step / 50) + 0.1 * math.sin(step)
        emit(event("progress", step=step, total=args.steps, epoch=1, loss=loss,
                   lr=1e-4 * min(1.0, step / 10), it_s=args.rate, eta=(args.steps - step) * pause))
        if step % 10 == 0:
            emit(event("log", message=f"step {step} done"))
            sample = run.samples / f"step-{step:06d}.txt"
            sample.write_text(f"sample text at step {step}", encoding="utf-8")
            emit(event("sample", step=step, path=str(sample), prompt="Hello"))
        while args.mode == "hang":
            time.sleep(0.05)
        time.sleep(pause)
    final = run.final / "adapter_model.safetensors"
    final.write_bytes(b"fake")
    emit(event("checkpoint", step=args.steps, path=str(save_checkpoint(run, args.steps))))
    emit(event("finished", status="completed", outputs=[str(final)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
