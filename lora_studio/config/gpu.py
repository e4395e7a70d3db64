"""What validation needs to know about the machine's GPU.

The hardware layer fills this in (or any object with the same attribute names);
config/ only reads it, so validation stays free of torch and pynvml.
"""
from __future__ import annotations

from dataclasses import dataclass

GIB = 1024 ** 3


@dataclass(frozen=True)
class GpuFacts:
    """GpuFacts() with no arguments describes a machine without CUDA."""
    name: str = ""              # "NVIDIA GeForce RTX 3060"; "" without CUDA
    total_vram_bytes: int = 0   # of the first GPU
    supports_bf16: bool = False
    cuda_available: bool = False
    device_count: int = 0
