"""Pick a device, and the precision that goes with it.

The package otherwise follows the tensors it is given (``x.device``, ``x.dtype``);
only entry points (recipes, the command line) call :func:`default_device`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TypeVar

import torch

from difflab.runtime.settings import SettingError


def default_device() -> torch.device:
    """CUDA, then Apple's MPS, then the CPU. ``DIFFLAB_DEVICE`` overrides."""
    name = os.environ.get("DIFFLAB_DEVICE", "").strip()
    if name:
        return parse_device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def parse_device(name: str, setting: str = "DIFFLAB_DEVICE") -> torch.device:
    """The device ``name`` (``cpu``, ``cuda``, ``cuda:N``, ``mps``) if usable here.

    Raises:
        SettingError: naming ``setting`` and the value, if torch does not know the
            name or the device is not available on this machine (instead of the
            traceback torch gives at the first tensor moved there).
    """
    fix = "use cpu, cuda, cuda:N or mps, or unset it to choose automatically"
    try:  # one rule on case for every setting: DIFFLAB_PROFILE=Full, DEVICE=CPU
        device = torch.device(name.strip().lower())
    except (RuntimeError, ValueError):
        raise SettingError(f"{setting}={name!r} is not a device name; {fix}.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = torch.version.cuda is not None
            why = "no CUDA GPU is visible" if built else "torch was built without CUDA"
            raise SettingError(
                f"{setting}={name!r}: CUDA is not available here ({why}); "
                f"use cpu, or unset it."
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise SettingError(
                f"{setting}={name!r}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}."
            )
    elif device.type == "mps":
        if not _mps_available():
            raise SettingError(
                f"{setting}={name!r}: Apple's MPS is not available here; "
                f"use cpu, or unset it."
            )
    elif device.type != "cpu":
        raise SettingError(f"{setting}={name!r} is not supported; {fix}.")
    return device


def native_cpu_bf16() -> bool:
    """Whether this CPU does bf16 matrix maths in hardware (Intel AMX or AVX512-BF16).

    Where it does, bf16 autocast trains the real-data laptop networks 1.4 to 2
    times faster on one core (measured on a Xeon with AMX, 2026-12-07, in the
    training loops: CIFAR-10's latent UNet 1.7x, its autoencoder 1.4x, its metric
    classifier 2.0x; on a Zen 5 core with AVX512-BF16 and no AMX, the UNet 1.4x
    and the classifier 1.6x); elsewhere it is emulated and slower, so it stays off.
    ``DIFFLAB_CPU_BF16=0`` turns it off here too.
    """
    if os.environ.get("DIFFLAB_CPU_BF16", "").strip() == "0":
        return False
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def autocast_dtype(device: torch.device, cpu: bool = False) -> torch.dtype | None:
    """bf16 where the device supports it, else ``None`` (full fp32).

    CUDA with bf16: always. The CPU only when asked (``cpu=True``: the recipes
    whose networks gain from it, see :func:`native_cpu_bf16`) and done in hardware.
    """
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if cpu and device.type == "cpu" and native_cpu_bf16():
        return torch.bfloat16
    return None


def bf16_here(device: torch.device) -> bool:
    """Whether a recipe that asks for bf16 autocast gets it on ``device`` (CUDA with
    bf16, or a CPU that does bf16 in hardware): what its cache key records."""
    return autocast_dtype(device, cpu=True) is not None


Config = TypeVar("Config")


def bf16_as_run(
    config: Config, flag: str, device: torch.device, cpu_only: bool = False
) -> Config:
    """``config`` (a dataclass) with its bf16 switch ``flag`` turned off where
    ``device`` would not run bf16 (:func:`bf16_here`), and, with ``cpu_only``, off
    every device but a CPU: the one rule by which a recipe's cache key records
    what ran (the UNet's ``cpu_amp``, the autoencoder's and classifier's ``amp``)."""
    on = bf16_here(device) and (device.type == "cpu" or not cpu_only)
    if getattr(config, flag) and not on:
        return replace(config, **{flag: False})
    return config


def describe(device: torch.device) -> str:
    """A human-readable device name, for the line every page prints."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)
