import json
import sys
import types

import pytest

from lora_studio.hardware import monitor
from lora_studio.runs.events import decode, encode

GIB = 1024**3


class FakeNVMLError(Exception):
    pass


def fake_nvml(cards, init_error=None, power_supported=True):
    """A stand-in for the pynvml module; cards: list of (name, used, total, capability)."""
    mod = types.ModuleType("pynvml")
    mod.NVML_TEMPERATURE_GPU = 0
    mod.NVMLError = FakeNVMLError
    mod.calls = []

    def nvmlInit():
        mod.calls.append("init")
        if init_error:
            raise FakeNVMLError(init_error)

    def nvmlShutdown():
        mod.calls.append("shutdown")

    def memory(handle):
        name, used, total, _ = cards[handle]
        return types.SimpleNamespace(used=used, total=total, free=total - used)

    def power(handle):
        if not power_supported:
            raise FakeNVMLError("Not Supported")
        return 215_500

    mod.nvmlInit = nvmlInit
    mod.nvmlShutdown = nvmlShutdown
    mod.nvmlDeviceGetCount = lambda: len(cards)
    mod.nvmlDeviceGetHandleByIndex = lambda i: i
    mod.nvmlDeviceGetName = lambda h: cards[h][0]
    mod.nvmlDeviceGetMemoryInfo = memory
    mod.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=40 + 10 * h, memory=5)
    mod.nvmlDeviceGetTemperature = lambda h, sensor: 60 + h
    mod.nvmlDeviceGetPowerUsage = power
    mod.nvmlDeviceGetCudaComputeCapability = lambda h: cards[h][3]
    return mod


def test_reads_each_gpu_and_bf16_from_compute_capability():
    nvml = fake_nvml([("NVIDIA GeForce RTX 3090", 2 * GIB, 24 * GIB, (8, 6)),
                      (b"Tesla T4", 1 * GIB, 16 * GIB, (7, 5))])
    snap = monitor.snapshot(nvml)
    assert snap.has_gpu and snap.message == ""
    first, second = snap.gpus
    assert first.name == "NVIDIA GeForce RTX 3090" and second.name == "Tesla T4"
    assert (first.vram_used, first.vram_total, first.vram_free) == (2 * GIB, 24 * GIB, 22 * GIB)
    assert first.util == 40 and first.temperature == 60 and first.power_w == 215.5
    assert first.bf16 and not second.bf16
    assert nvml.calls == ["init", "shutdown"]


def test_unsupported_queries_give_none_not_errors():
    snap = monitor.snapshot(fake_nvml([("RTX 2060 Laptop", 0, 6 * GIB, (7, 5))], power_supported=False))
    assert snap.gpus[0].power_w is None and snap.gpus[0].vram_total == 6 * GIB


def test_init_failure_and_zero_devices_are_no_gpu_states():
    failed = monitor.snapshot(fake_nvml([], init_error="Driver Not Loaded"))
    assert not failed.has_gpu and "no NVIDIA GPU" in failed.message
    assert "Driver Not Loaded" in failed.message
    empty = monitor.snapshot(fake_nvml([]))
    assert not empty.has_gpu and "no NVIDIA GPU" in empty.message


def test_missing_pynvml_module_is_no_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    snap = monitor.snapshot()
    assert not snap.has_gpu and "nvidia-ml-py" in snap.message


def test_real_machine_never_raises_and_reports_ram():
    snap = monitor.snapshot()  # this machine has no NVIDIA GPU
    if sys.platform.startswith("linux") or sys.platform == "win32":
        assert snap.ram is not None and 0 < snap.ram.used <= snap.ram.total
    if not snap.has_gpu:
        assert snap.message


def test_meminfo_parsing(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemFree:  1000 kB\nMemAvailable:   4000000 kB\n")
    ram = monitor._ram_linux(str(meminfo))
    assert ram.total == 16_000_000 * 1024 and ram.used == 12_000_000 * 1024


def test_hardware_event_totals_and_round_trip(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    snap = monitor.snapshot(fake_nvml([("A", 2 * GIB, 24 * GIB, (8, 6)),
                                       ("B", 1 * GIB, 16 * GIB, (8, 9))]))
    ev = monitor.hardware_event(snap)
    assert ev["type"] == "hardware"
    assert ev["vram_used"] == 3 * GIB and ev["vram_total"] == 40 * GIB
    assert ev["util"] == 45 and ev["temperature"] == 61
    assert len(ev["gpus"]) == 2 and ev["gpus"][1]["name"] == "B"
    assert decode(encode(ev)) == json.loads(encode(ev))

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    only_b = monitor.hardware_event(snap)
    assert only_b["vram_total"] == 16 * GIB and [g["name"] for g in only_b["gpus"]] == ["B"]


def test_hardware_event_without_gpu_has_ram_and_message():
    ev = monitor.hardware_event(monitor.snapshot(fake_nvml([], init_error="nope")))
    assert ev["gpus"] == [] and ev["vram_total"] is None and ev["util"] is None
    assert "no NVIDIA GPU" in ev["message"]
    assert set(ev) >= {"gpus", "vram_used", "vram_total", "util", "temperature", "ram_used", "ram_total"}


@pytest.mark.parametrize("visible", ["GPU-1234-uuid", ""])
def test_visible_devices_that_are_not_indices_show_every_card(monkeypatch, visible):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    snap = monitor.snapshot(fake_nvml([("A", 0, GIB, (8, 0))]))
    expected = 1 if visible else 0
    assert len(monitor.visible_gpus(snap)) == expected


def test_gpu_facts_describe_the_cards_a_run_sees(monkeypatch):
    snap = monitor.snapshot(fake_nvml([("Tesla T4", 0, 16 * GIB, (7, 5)),
                                       ("NVIDIA GeForce RTX 4090", 0, 24 * GIB, (8, 9))]))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    both = monitor.gpu_facts(snap)
    assert both.name == "Tesla T4" and not both.supports_bf16 and both.device_count == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    second = monitor.gpu_facts(snap)
    assert (second.name, second.total_vram_bytes, second.supports_bf16, second.device_count) == \
        ("NVIDIA GeForce RTX 4090", 24 * GIB, True, 1) and second.cuda_available
    assert monitor.gpu_facts(monitor.snapshot(fake_nvml([], init_error="x"))) == monitor.GpuFacts()
