"""What the playground saves by switching adapters on a loaded base instead of loading
the base again, on the tiny text and SD models from resources/. Target: ratio <= 0.05.

    python benchmarks/playground_switch.py [--rounds 5] [--switches 20]

Each round, in the playground's own request handler (playground/server.py), loads the
base (the baseline: what a front-end that reloads would pay, before any adapter), adds
two adapters, and times switching between them (`set_adapters`, the median of
--switches switches); which of the two is timed first alternates. The headline is the
median of the per-round ratios switch / base load, with their min-max. The same for
changing an image LoRA's strength on the tiny SD pipeline.

Then the time to the first streamed token after Send, through the real process and
its launcher (runs/playground_launch.py), against the time to the whole answer of the
same request (--tokens new tokens): the share of the answer's wait a user spends
before text starts to appear.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._stats import summarize, verdict  # noqa: E402

MODEL = ROOT / "resources" / "tiny-text-model"
SD = ROOT / "resources" / "tiny-sd"
CLOCK = time.perf_counter


def make_adapters(folder: Path) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    out = []
    for i, targets in enumerate((["q_proj", "v_proj"], ["o_proj", "down_proj"])):
        torch.manual_seed(i)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(MODEL)),
                               LoraConfig(r=8, lora_alpha=8, target_modules=targets,
                                          init_lora_weights=False))
        model.save_pretrained(str(folder / f"a{i}"))
        out.append(folder / f"a{i}")
    return out


def make_image_lora(folder: Path) -> Path:
    """A LoRA in LoRA Studio's image format (PEFT names per component, alpha in the header)."""
    from safetensors.torch import save_file
    from lora_studio.config.parse import parse_job
    from lora_studio.engine.image.lora import add_lora, lora_state
    from lora_studio.engine.image.model import load_sd
    job, _ = parse_job({"model": {"path": str(SD)}, "network": {"rank": 4, "alpha": 4.0}})
    folder.mkdir(parents=True, exist_ok=True)
    save_file(lora_state(add_lora(load_sd(job), job)), str(folder / "adapter.safetensors"),
              {"lora_studio.alpha": "4"})
    return folder


def strength_rounds(lora: Path, rounds: int, switches: int) -> tuple[list[float], list[float]]:
    """Change an image LoRA's strength (set_adapters) vs load the SD base again."""
    from lora_studio.playground.server import Server
    from lora_studio.runs.playground_protocol import request
    events: list[dict] = []
    server = Server(events.append)
    loads, changes, seq = [], [], 0
    for r in range(rounds):
        def load() -> float:
            nonlocal seq
            seq += 1
            start = CLOCK()
            handled(server, events, seq, request("load_base", kind="image", path=str(SD)))
            return CLOCK() - start

        if r % 2 == 0:
            loads.append(load())
        seq += 1
        handled(server, events, seq, request("load_adapter", name="lora", path=str(lora)))
        times = []
        for i in range(switches):
            seq += 1
            start = CLOCK()
            handled(server, events, seq, request("set_adapters", names=["lora"],
                                                 weights=[0.3 if i % 2 else 0.8]))
            times.append(CLOCK() - start)
        changes.append(statistics.median(times))
        if r % 2 == 1:
            loads.append(load())
    return changes, loads


def handled(server, events, seq: int, req: dict) -> None:
    events.clear()
    server.handle(seq, req)
    errors = [e for e in events if e["type"] == "error"]
    if errors:
        raise SystemExit(f"playground failed: {errors[0]['message']}")


def switch_rounds(adapters: list[Path], rounds: int, switches: int) -> tuple[list[float], list[float]]:
    from lora_studio.playground.server import Server
    from lora_studio.runs.playground_protocol import request
    events: list[dict] = []
    server = Server(events.append)
    loads, switch = [], []
    seq = 0
    for r in range(rounds):
        def load() -> float:
            nonlocal seq
            seq += 1
            start = CLOCK()
            handled(server, events, seq, request("load_base", kind="text", path=str(MODEL)))
            return CLOCK() - start

        def switched() -> float:
            nonlocal seq
            times = []
            for i in range(switches):
                seq += 1
                start = CLOCK()
                handled(server, events, seq, request("set_adapters", names=[f"a{i % 2}"]))
                times.append(CLOCK() - start)
            return statistics.median(times)

        if r % 2 == 0:
            loads.append(load())
        for i, path in enumerate(adapters):
            seq += 1
            handled(server, events, seq, request("load_adapter", name=f"a{i}", path=str(path)))
        switch.append(switched())
        if r % 2 == 1:
            loads.append(load())
    return switch, loads


def first_token_rounds(adapters: list[Path], rounds: int, tokens: int) -> tuple[list[float], list[float]]:
    from lora_studio.runs.playground_launch import PlaygroundProcess
    from lora_studio.runs.playground_protocol import request
    proc = PlaygroundProcess(stderr_path=Path(tempfile.gettempdir()) / "playground-bench.log")

    def until(kind: str) -> dict:
        while True:
            ev = proc.events.get(timeout=600)
            if ev["type"] == "error" or ev["type"] == "exited":
                raise SystemExit(f"playground failed: {ev}")
            if ev["type"] == kind:
                return ev

    first, whole = [], []
    try:
        proc.send(request("load_base", kind="text", path=str(MODEL)))
        proc.send(request("load_adapter", name="a0", path=str(adapters[0])))
        until("adapter_loaded")
        for r in range(rounds + 1):
            start = CLOCK()
            proc.send(request("generate", id=r, adapters=["a0"] if r % 2 else [], temperature=0,
                              max_new_tokens=tokens,
                              messages=[{"role": "user", "content": "What colour is a plum?"}]))
            until("token")
            got_first = CLOCK()
            until("done")
            if r:  # the first answer warms the process up
                first.append(got_first - start)
                whole.append(CLOCK() - start)
    finally:
        proc.stop()
    return first, whole


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args(argv)
    import torch
    print(f"device: {'cuda ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        adapters = make_adapters(Path(tmp))
        switch, loads = switch_rounds(adapters, args.rounds, args.switches)
        s = summarize("switch the active adapter", [x * 1000 for x in switch],
                      [x * 1000 for x in loads], baseline="load the base again", unit="ms")
        ok = verdict("switch / base load", s.ratio, 0.05)
        changes, sd_loads = strength_rounds(make_image_lora(Path(tmp) / "image"), args.rounds,
                                            args.switches)
        s = summarize("change an image LoRA's strength", [x * 1000 for x in changes],
                      [x * 1000 for x in sd_loads], baseline="load the SD base again", unit="ms")
        ok = verdict("strength change / base load", s.ratio, 0.05) and ok
        first, whole = first_token_rounds(adapters, args.rounds, args.tokens)
        summarize("first streamed token after Send", [x * 1000 for x in first],
                  [x * 1000 for x in whole], baseline=f"the whole {args.tokens}-token answer",
                  unit="ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
