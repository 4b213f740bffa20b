"""Profiles: ``quick`` (small nets, few steps: the CPU default) and ``full`` (GPU).

``DIFFLAB_PROFILE=quick|full`` overrides the choice made from the device.
"""

from __future__ import annotations

import os

import torch

PROFILES = ("quick", "full")


def current_profile() -> str:
    """The active profile: ``$DIFFLAB_PROFILE`` if set, else ``full`` on CUDA, ``quick`` elsewhere."""
    name = os.environ.get("DIFFLAB_PROFILE", "").strip().lower()
    if name:
        if name not in PROFILES:
            raise ValueError(
                f"DIFFLAB_PROFILE={name!r} is not a profile; use one of {', '.join(PROFILES)}."
            )
        return name
    return "full" if torch.cuda.is_available() else "quick"
