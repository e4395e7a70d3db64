"""The engine's hardware events: time-based, main process only, once without a GPU."""
import torch

from lora_studio.engine.core.loop import LoopHooks, LoopSpec, make_accelerator, train_loop
from lora_studio.hardware.monitor import NO_GPU, GpuMonitor, HardwareReporter
from lora_studio.runs.events import decode, encode
from test_monitor import GIB, fake_nvml


def _run(steps: int, monitor: GpuMonitor, interval_s: float) -> list[dict]:
    torch.manual_seed(0)
    accelerator = make_accelerator("no", cpu=True)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    events: list[dict] = []
    hooks = LoopHooks(epoch_batches=lambda epoch: [[0, 1], [2, 3], [4, 5], [6, 7]],
                      batch_items=len,
                      loss_sum=lambda idx: torch.nn.functional.mse_loss(model(x[idx]), y[idx],
                                                                        reduction="sum"),
                      save_checkpoint=lambda step: None)
    outcome = train_loop(accelerator, model, optimizer, scheduler, list(model.parameters()),
                         LoopSpec(total_steps=steps, steps_per_epoch=4), hooks, events.append,
                         lambda: False, monitor=monitor, hardware_interval_s=interval_s)
    assert outcome.status == "completed" and outcome.step == steps
    return events


def test_without_a_gpu_the_loop_emits_one_hardware_event():
    no_driver = fake_nvml([], init_error="NVML Shared Library Not Found")
    events = _run(6, GpuMonitor(no_driver), interval_s=0.0)  # due at every step, still once
    hardware = [ev for ev in events if ev["type"] == "hardware"]
    assert len(hardware) == 1 and events[0] is hardware[0]
    assert hardware[0]["message"].startswith(NO_GPU) and hardware[0]["gpus"] == []
    assert hardware[0]["ram_total"] > 0 and hardware[0]["vram_total"] is None
    assert decode(encode(hardware[0]))["message"] == hardware[0]["message"]


def test_with_a_gpu_the_loop_reports_at_start_during_and_at_the_end():
    nvml = fake_nvml([("NVIDIA GeForce RTX 4060", 3 * GIB, 8 * GIB, (8, 9))])
    events = _run(5, GpuMonitor(nvml), interval_s=0.0)
    types = [ev["type"] for ev in events]
    # start, after each of the 5 steps, and the final reading
    assert types.count("hardware") == 7 and types[0] == "hardware" and types[-1] == "hardware"
    assert all(ev["vram_used"] == 3 * GIB and ev["vram_total"] == 8 * GIB
               for ev in events if ev["type"] == "hardware")
    assert "peak_allocated" not in events[0]  # a CPU run has no CUDA allocator to ask
    assert nvml.calls == ["init", "shutdown"]  # one monitor kept for the run


def test_reporter_is_time_based():
    nvml = fake_nvml([("NVIDIA GeForce RTX 3060", 1 * GIB, 12 * GIB, (8, 6))])
    now = {"t": 100.0}
    events: list[dict] = []
    reporter = HardwareReporter(events.append, interval_s=3.0, monitor=GpuMonitor(nvml),
                                extra=lambda: {"peak_allocated": 123}, clock=lambda: now["t"])
    emitted = []
    for t in (100.0, 100.5, 102.9, 103.0, 104.0, 106.5, 106.6):
        now["t"] = t
        emitted.append(reporter.poll())
    assert emitted == [True, False, False, True, False, True, False]
    assert reporter.poll(force=True) and len(events) == 4
    assert all(ev["peak_allocated"] == 123 for ev in events)
    reporter.close()
