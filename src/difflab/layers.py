"""The package's layers: each part of ``difflab`` and its rank, lowest first.

A module may import from its own part and from parts of a lower rank only; parts
on one rank are independent of each other. ``difflab.tests.test_architecture``
enforces it from the imports, ``docs/architecture.md`` draws it, and the API
reference lists the parts in this order. This module imports nothing, so the
site's hooks read it without importing the package.
"""

from __future__ import annotations

LAYERS: dict[str, int] = {
    "core": 0,
    "layers": 0,
    "foundations": 1,
    "nets": 1,
    "data": 1,
    "runtime": 1,
    "diffusion": 2,
    "score": 3,
    "flow": 3,
    "toy": 4,
    "train": 5,
    "pipelines": 6,
    "eval": 7,
    "notes": 8,
    "cli": 9,
    "__main__": 10,
    "__init__": 0,
}
