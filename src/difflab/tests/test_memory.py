"""The allocator setting of difflab.core.memory: taken once, and harmless."""

import ctypes.util
import subprocess
import sys

import pytest

from difflab.core.memory import keep_freed_memory


@pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or "musl" in (ctypes.util.find_library("c") or ""),
    reason="glibc only",
)
def test_keep_freed_memory_takes_effect_once():
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True  # idempotent: the first answer


def test_same_numbers_with_and_without():
    """A network's output does not depend on where its memory came from."""
    code = (
        "import sys, torch\n"
        "if sys.argv[1] == '1':\n"
        "    from difflab.core.memory import keep_freed_memory; keep_freed_memory()\n"
        "from difflab.nets.unet import UNet\n"
        "from difflab.pipelines.recipes import get_recipe\n"
        "torch.manual_seed(0); net = UNet(get_recipe('ddpm', 'quick').unet)\n"
        "for p in net.parameters(): p.data.normal_(0, 0.1)\n"
        "x = torch.randn(64, 1, 8, 8); t = torch.arange(64.0) * 15\n"
        "print(repr(float(net(x, t, None).double().sum())))\n"
    )
    outs = [
        subprocess.run(
            [sys.executable, "-c", code, keep],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for keep in ("0", "1")
    ]
    assert outs[0] == outs[1] and outs[0].strip()
