"""Pick a device, and the precision that goes with it.

The package otherwise follows the tensors it is given (``x.device``, ``x.dtype``);
only entry points (recipes, the command line) call :func:`default_device`.
"""

from __future__ import annotations

import os

import torch


def default_device() -> torch.device:
    """CUDA, then Apple's MPS, then the CPU. ``DIFFLAB_DEVICE`` overrides."""
    name = os.environ.get("DIFFLAB_DEVICE")
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if (
        getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available()
    ):
        return torch.device("mps")
    return torch.device("cpu")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the device supports it (CUDA with bf16), else ``None`` (full fp32)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def describe(device: torch.device) -> str:
    """A human-readable device name, for the line every page prints."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)
