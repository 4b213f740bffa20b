"""Profiles: ``quick`` (small nets, few steps: the CPU default) and ``full`` (GPU).

``DIFFLAB_PROFILE=quick|full`` overrides the choice made from the device.
"""

from __future__ import annotations

import os

import torch

from difflab.runtime.settings import SettingError

PROFILES = ("quick", "full")


def current_profile() -> str:
    """``$DIFFLAB_PROFILE`` if set, else ``full`` on CUDA and ``quick`` elsewhere.

    Raises:
        SettingError: if ``DIFFLAB_PROFILE`` names no profile.
    """
    raw = os.environ.get("DIFFLAB_PROFILE", "")
    name = raw.strip().lower()
    if name:
        if name not in PROFILES:
            raise SettingError(
                f"DIFFLAB_PROFILE={raw!r} is not a profile; use one of "
                f"{', '.join(PROFILES)}, or unset it."
            )
        return name
    return "full" if torch.cuda.is_available() else "quick"
