"""Live GPU facts from NVIDIA's NVML (package ``nvidia-ml-py``, module ``pynvml``).

Every reader here returns data, never raises: a machine without NVIDIA's library,
where NVML fails to start, or with no GPU gets a snapshot with an empty ``gpus``
tuple, a message saying why, and the system RAM.
"""
from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

from lora_studio.config.gpu import GpuFacts
from lora_studio.runs.events import Emit, event

NO_GPU = "no NVIDIA GPU"
HARDWARE_INTERVAL_S = 3.0  # between the engine's hardware events: live enough, and cheap


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    vram_used: int            # bytes
    vram_total: int           # bytes
    vram_free: int            # bytes
    util: int | None          # percent, None where the driver does not report it
    temperature: int | None   # degrees Celsius
    power_w: float | None     # watts
    compute_capability: tuple[int, int] | None
    bf16: bool                # Ampere (8.0) and newer train in bf16


@dataclass(frozen=True)
class RamInfo:
    used: int   # bytes
    total: int  # bytes


@dataclass(frozen=True)
class HardwareSnapshot:
    gpus: tuple[GpuInfo, ...]
    ram: RamInfo | None
    message: str  # "" when GPUs were read; otherwise why there are none

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)


def system_ram() -> RamInfo | None:
    """Used and total system RAM, or None where it cannot be read."""
    try:
        if sys.platform.startswith("linux"):
            return _ram_linux()
        if sys.platform == "win32":
            return _ram_windows()
        psutil = importlib.import_module("psutil")
        vm = psutil.virtual_memory()
        return RamInfo(used=int(vm.total - vm.available), total=int(vm.total))
    except Exception:  # any failure here only hides the RAM figure
        return None


def _ram_linux(path: str = "/proc/meminfo") -> RamInfo:
    values: dict[str, int] = {}
    with open(path, encoding="ascii", errors="replace") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[key] = int(parts[0]) * 1024  # meminfo reports kB
    total = values["MemTotal"]
    available = values.get("MemAvailable", values.get("MemFree", 0))
    return RamInfo(used=total - available, total=total)


def _ram_windows() -> RamInfo:
    import ctypes

    class MEMORYSTATUSEX(ctypes.Structure):
        _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                    ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                    ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                    ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                    ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

    status = MEMORYSTATUSEX()
    status.dwLength = ctypes.sizeof(MEMORYSTATUSEX)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
        raise OSError("GlobalMemoryStatusEx failed")
    return RamInfo(used=int(status.ullTotalPhys - status.ullAvailPhys), total=int(status.ullTotalPhys))


def _optional(call: Any, *args: Any) -> Any:
    """One NVML query that some cards or drivers do not support (laptops often lack
    power readings): None instead of an error."""
    try:
        return call(*args)
    except Exception:
        return None


def _read_gpu(nvml: ModuleType, index: int) -> GpuInfo:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = nvml.nvmlDeviceGetName(handle)
    if isinstance(name, bytes):  # older nvidia-ml-py versions return bytes
        name = name.decode("utf-8", errors="replace")
    mem = nvml.nvmlDeviceGetMemoryInfo(handle)
    rates = _optional(nvml.nvmlDeviceGetUtilizationRates, handle)
    temperature = _optional(nvml.nvmlDeviceGetTemperature, handle,
                            getattr(nvml, "NVML_TEMPERATURE_GPU", 0))
    milliwatts = _optional(nvml.nvmlDeviceGetPowerUsage, handle)
    capability = _optional(nvml.nvmlDeviceGetCudaComputeCapability, handle)
    if capability is not None:
        capability = (int(capability[0]), int(capability[1]))
    return GpuInfo(
        index=index, name=str(name), vram_used=int(mem.used), vram_total=int(mem.total),
        vram_free=int(mem.free), util=None if rates is None else int(rates.gpu),
        temperature=None if temperature is None else int(temperature),
        power_w=None if milliwatts is None else round(milliwatts / 1000.0, 1),
        compute_capability=capability, bf16=capability is not None and capability >= (8, 0))


class GpuMonitor:
    """Keeps NVML initialised between reads, for pollers (the engine, the UI's timer).

    ``nvml`` replaces the ``pynvml`` module (tests pass a fake one)."""

    def __init__(self, nvml: ModuleType | None = None):
        self._nvml = nvml
        self._ready = False
        self._failure = ""

    def _start(self) -> ModuleType | None:
        if self._ready:
            return self._nvml
        if self._failure:
            return None
        try:
            if self._nvml is None:
                self._nvml = importlib.import_module("pynvml")
        except ImportError:
            self._failure = f"{NO_GPU}: the nvidia-ml-py package is not installed"
            return None
        try:
            self._nvml.nvmlInit()
        except Exception as exc:
            self._failure = f"{NO_GPU}: NVIDIA's driver library could not be started ({exc})"
            return None
        self._ready = True
        return self._nvml

    def read(self) -> HardwareSnapshot:
        ram = system_ram()
        nvml = self._start()
        if nvml is None:
            return HardwareSnapshot(gpus=(), ram=ram, message=self._failure)
        try:
            count = int(nvml.nvmlDeviceGetCount())
            gpus = tuple(_read_gpu(nvml, i) for i in range(count))
        except Exception as exc:  # a GPU that fell off the bus, a driver reset
            return HardwareSnapshot(gpus=(), ram=ram,
                                    message=f"{NO_GPU}: reading the GPUs failed ({exc})")
        if not gpus:
            return HardwareSnapshot(gpus=(), ram=ram, message=f"{NO_GPU} was found")
        return HardwareSnapshot(gpus=gpus, ram=ram, message="")

    def close(self) -> None:
        if self._ready and self._nvml is not None:
            _optional(self._nvml.nvmlShutdown)
        self._ready = False

    def __enter__(self) -> "GpuMonitor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def snapshot(nvml: ModuleType | None = None) -> HardwareSnapshot:
    """One reading of every NVIDIA GPU and the system RAM."""
    with GpuMonitor(nvml) as monitor:
        return monitor.read()


def visible_gpus(snap: HardwareSnapshot) -> tuple[GpuInfo, ...]:
    """The GPUs a training process will see: NVML lists every card, CUDA only those
    in CUDA_VISIBLE_DEVICES (when it holds plain indices)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return snap.gpus
    wanted = [int(part) for part in visible.split(",") if part.strip().isdigit()]
    if len(wanted) != len([p for p in visible.split(",") if p.strip()]):
        return snap.gpus  # UUIDs or MIG names: cannot map them, show every card
    by_index = {gpu.index: gpu for gpu in snap.gpus}
    return tuple(by_index[i] for i in wanted if i in by_index)


def gpu_facts(snap: HardwareSnapshot) -> GpuFacts:
    """What validation needs to know about the GPUs a training process will see."""
    gpus = visible_gpus(snap)
    if not gpus:
        return GpuFacts()
    return GpuFacts(name=gpus[0].name, total_vram_bytes=gpus[0].vram_total, supports_bf16=gpus[0].bf16,
                    cuda_available=True, device_count=len(gpus))


def machine_gpu() -> GpuFacts:
    """This machine's GPU as validation sees it, read through NVML (no torch import)."""
    return gpu_facts(snapshot())


def hardware_event(snap: HardwareSnapshot | None = None, **extra: Any) -> dict:
    """The engine's ``hardware`` event: per-GPU figures plus totals over the GPUs the
    run uses (VRAM summed, utilisation averaged, the hottest temperature); ``extra``
    fields are added as they are."""
    snap = snapshot() if snap is None else snap
    gpus = visible_gpus(snap)
    utils = [g.util for g in gpus if g.util is not None]
    temps = [g.temperature for g in gpus if g.temperature is not None]
    fields: dict[str, Any] = {
        "gpus": [asdict(g) for g in gpus],
        "vram_used": sum(g.vram_used for g in gpus) if gpus else None,
        "vram_total": sum(g.vram_total for g in gpus) if gpus else None,
        "util": round(sum(utils) / len(utils)) if utils else None,
        "temperature": max(temps) if temps else None,
        "ram_used": snap.ram.used if snap.ram else None,
        "ram_total": snap.ram.total if snap.ram else None,
    }
    if not gpus:
        fields["message"] = snap.message or f"{NO_GPU} is visible to this process"
    return event("hardware", **fields, **extra)


class HardwareReporter:
    """Emits ``hardware`` events for a running job: on the first poll, then at most
    once every ``interval_s`` seconds of wall time, however fast the steps are. A
    machine whose first reading finds no GPU gets that one event only: its state
    does not change during a run.

    extra: called at each event for fields the caller knows (the engine adds the
    allocator's peak)."""

    def __init__(self, emit: Emit, interval_s: float = HARDWARE_INTERVAL_S,
                 monitor: GpuMonitor | None = None,
                 extra: Callable[[], dict[str, Any]] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._emit = emit
        self._interval = interval_s
        self._monitor = monitor or GpuMonitor()
        self._extra = extra
        self._clock = clock
        self._last: float | None = None
        self._done = False

    def poll(self, force: bool = False) -> bool:
        """Emit an event when it is due (or ``force``); whether one was emitted."""
        if self._done:
            return False
        now = self._clock()
        first = self._last is None
        if not (first or force or now - self._last >= self._interval):
            return False
        self._last = now
        snap = self._monitor.read()
        self._done = first and not snap.gpus
        extra = self._extra() if self._extra is not None and snap.gpus else {}
        self._emit(hardware_event(snap, **extra))
        return True

    def close(self) -> None:
        self._monitor.close()
