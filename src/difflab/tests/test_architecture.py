"""The package's layers, read from its imports (stdlib ``ast``, nothing is run).

A module may import from its own subpackage and from lower layers only, never
another module's private (``_``) names, and the import graph has no cycles.
The layers are :data:`difflab.layers.LAYERS`; ``docs/architecture.md`` draws them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from difflab.layers import LAYERS  # lowest first; one rank: independent parts

PACKAGE = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"] or ["__init__"]
    return "difflab." + ".".join(parts) if parts != ["__init__"] else "difflab"


def package_modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for p in sorted(PACKAGE.rglob("*.py"))
        if "tests" not in p.relative_to(PACKAGE).parts
    }


def imports_of(path: Path, text: str | None = None) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every difflab import in ``path``
    (or in ``text`` as if it were that file), including those inside functions."""
    tree = ast.parse(path.read_text() if text is None else text, filename=str(path))
    me = module_name(path)
    pkg = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "difflab":
                    out.append((a.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "difflab":
                continue
            names = [a.name for a in node.names]
            # `from difflab.diffusion import samplers` imports a module, not a name
            for n in names:
                if f"{mod}.{n}" in package_modules():
                    out.append((f"{mod}.{n}", [], node.lineno))
                else:
                    out.append((mod, [n], node.lineno))
    return out


def part(module: str) -> str:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 else "__init__"


def private_attribute_uses(path: Path) -> list[tuple[str, int]]:
    """``alias._name`` where ``alias`` is an imported difflab module."""
    tree = ast.parse(path.read_text())
    aliases = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "difflab"
        ):
            for a in node.names:
                if f"{node.module}.{a.name}" in package_modules():
                    aliases.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("difflab") and a.asname:
                    aliases.add(a.asname)
    return [
        (f"{node.value.id}.{node.attr}", node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in aliases
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]


def test_every_part_has_a_layer():
    parts = {part(m) for m in package_modules()}
    assert parts <= set(LAYERS), f"place {sorted(parts - set(LAYERS))} in LAYERS"


@pytest.mark.parametrize("name", sorted(package_modules()))
def test_imports_respect_the_layers(name):
    path = package_modules()[name]
    mine = part(name)
    bad = []
    for mod, _, line in imports_of(path):
        theirs = part(mod)
        if theirs == mine:
            continue
        if LAYERS[theirs] >= LAYERS[mine]:
            bad.append(f"line {line}: {mod} ({theirs}, layer {LAYERS[theirs]})")
    assert not bad, f"{name} (layer {LAYERS[mine]}) imports upward or sideways: {bad}"


@pytest.mark.parametrize("name", sorted(package_modules()))
def test_no_private_names_across_modules(name):
    path = package_modules()[name]
    bad = [
        f"line {line}: {mod}.{n}"
        for mod, names, line in imports_of(path)
        for n in names
        if n.startswith("_") and mod != name
    ]
    bad += [f"line {line}: {use}" for use, line in private_attribute_uses(path)]
    assert not bad, f"{name} uses another module's private names: {bad}"


def test_no_import_cycles():
    mods = package_modules()
    graph = {
        m: {i if i in mods else i.rpartition(".")[0] for i, _, _ in imports_of(p)}
        & set(mods)
        for m, p in mods.items()
    }
    for m in graph:  # a package's own __init__ is not an edge back to it
        graph[m].discard("difflab")
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n) :] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_checks_catch_a_violation():
    """The rules are not vacuous: these lines in a foundations module are caught."""
    path = PACKAGE / "foundations" / "gaussians.py"
    text = (
        "from difflab.pipelines.recipes import Recipe\nfrom ..data.common import _x\n"
    )
    found = imports_of(path, text)
    assert found == [
        ("difflab.pipelines.recipes", ["Recipe"], 1),
        ("difflab.data.common", ["_x"], 2),
    ]
    assert LAYERS[part(found[0][0])] > LAYERS["foundations"]  # upward: rejected
    assert part(found[1][0]) != "foundations" and found[1][1][0].startswith("_")
