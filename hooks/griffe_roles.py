"""Griffe extension: Sphinx roles in difflab's docstrings become API links.

Docstrings in ``src/difflab`` refer to other objects the Sphinx way
(``:func:`gather` ``, ``:class:`difflab.nets.unet.UNet` ``, ``:mod:`difflab.toy` ``).
mkdocstrings renders Markdown, where such a role would print literally. Before the
docstrings are parsed, this extension rewrites each role into an autorefs link,
``[`gather`][difflab.diffusion.schedules.gather]``, resolving the name the way a
reader would: a dotted path as written (or under ``difflab.``), else a name in the
scope of the object (its members, its class, its module and what the module
imports), else the one public object of the package with that name. A name that
does not resolve to a public object of the API pages (``torch.Tensor``, a private
helper) becomes plain code: never a broken link, never a literal role.

mkdocs.yml loads it with ``extensions: [hooks/griffe_roles.py]`` in the options of
mkdocstrings' Python handler.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(func|meth|class|mod|attr|data|exc|obj|const):`~?([^`]+)`")


def _public(path: str) -> bool:
    return not any(p.startswith("_") for p in path.split(".")) and (
        ".tests" not in path
    )


def _objects(obj):
    """Every object defined in ``obj`` (aliases excluded), depth first."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx cross-reference roles into autorefs links."""

    def on_package(self, *, pkg, **kwargs) -> None:
        everything = list(_objects(pkg))
        by_name: dict[str, set[str]] = {}
        for obj in everything:
            if _public(obj.path):
                by_name.setdefault(obj.name, set()).add(obj.path)
        for obj in everything:
            if obj.docstring is not None and ROLE.search(obj.docstring.value):
                obj.docstring.value = ROLE.sub(
                    lambda m, o=obj: self._link(m, o, pkg, by_name),
                    obj.docstring.value,
                )

    def _link(self, m: re.Match, obj, pkg, by_name) -> str:
        written = m[2].strip()
        name = written.split("(")[0].strip().lstrip(".")
        path = self._resolve(name, obj, pkg, by_name)
        shown = written.split(".")[-1] if m[0].count("~") else written
        if path is None or not _public(path) or not self._rendered(path, pkg):
            return f"`{shown}`"
        return f"[`{shown}`][{path}]"

    @staticmethod
    def _rendered(path: str, pkg) -> bool:
        """mkdocstrings shows an attribute (a module constant) only with a docstring."""
        try:
            target = pkg if path == pkg.path else pkg[path[len(pkg.path) + 1 :]]
        except Exception:
            return False
        return not (target.is_attribute and target.docstring is None)

    @staticmethod
    def _lookup(path: str, pkg):
        if path != pkg.path and not path.startswith(pkg.path + "."):
            return None
        try:
            found = pkg if path == pkg.path else pkg[path[len(pkg.path) + 1 :]]
            return found.final_target.path if found.is_alias else found.path
        except Exception:  # not in the package, or an alias to outside it
            return None

    def _resolve(self, name: str, obj, pkg, by_name) -> str | None:
        if "." in name:
            for path in (name, f"{pkg.path}.{name}", f"{obj.module.path}.{name}"):
                found = self._lookup(path, pkg)
                if found:
                    return found
            return None
        scopes = [obj, obj.parent, obj.module] if obj.parent else [obj]
        for scope in scopes:
            if scope is not None and name in getattr(scope, "members", {}):
                found = self._lookup(f"{scope.path}.{name}", pkg)
                if found:
                    return found
        candidates = by_name.get(name, set())
        return next(iter(candidates)) if len(candidates) == 1 else None
