"""The package's import rules (docs/architecture.md): imports go down only.

Every `import` of a `keras_rankmixer` module anywhere in a file — at the top or inside a
function — is an edge of the graph checked here, so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_rankmixer"

#: Each room and the rooms it may import (besides itself). Order = the picture in
#: docs/architecture.md, bottom to top.
ALLOWED: dict[str, set[str]] = {
    "types": set(),
    "layers": {"types"},
    "features": {"layers", "types"},
    "flops": {"layers", "features", "types"},
    "models": {"layers", "features", "flops", "types"},
    "data": {"layers", "features", "types"},
    "training": {"layers", "features", "flops", "models", "data", "types"},
    "serving": {"features", "types"},
    "export": {"layers", "features", "flops", "models", "data", "serving", "types"},
    "tfrs": {"layers", "features", "models", "training", "types"},
    "distribution": {"layers", "features", "models", "types"},
    "runs": {"training"},  # deprecated re-export shims
    "moe_callbacks": {"training"},
    "commands": {
        "layers",
        "features",
        "flops",
        "models",
        "data",
        "training",
        "export",
        "serving",
        "distribution",
        "types",
    },
    "cli": {"commands"},
}


ROOMS = set(ALLOWED)

#: Rooms that may import the package root (`import keras_rankmixer`: the whole public API, e.g.
#: to register every layer before `keras.saving.load_model`). Nothing below them may: the root
#: imports them.
ROOT_IMPORTERS = {"training", "tfrs", "commands", "cli"}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("keras_rankmixer")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "keras_rankmixer":  # from keras_rankmixer import layers, Ranker
                out |= {
                    f"keras_rankmixer.{a.name}" if a.name in ROOMS else "keras_rankmixer"
                    for a in node.names
                }
            elif node.module.startswith("keras_rankmixer"):
                out.add(node.module)
    return out


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        yield name, path


MODULES = list(_modules())


def test_every_room_has_a_rule():
    rooms = {_room(name) for name, _ in MODULES} - {"__init__"}
    assert rooms <= set(ALLOWED), f"rooms without an import rule: {rooms - set(ALLOWED)}"


@pytest.mark.parametrize("name,path", MODULES, ids=[n for n, _ in MODULES])
def test_imports_go_down_only(name, path):
    room = _room(name)
    if room == "__init__":
        return  # the top-level package re-exports the public API
    allowed = ALLOWED[room] | {room} | ({"__init__"} if room in ROOT_IMPORTERS else set())
    bad = sorted(target for target in _imports(path) if _room(target) not in allowed)
    assert not bad, f"{name} ({room}) may not import {bad}; see docs/architecture.md"


def test_the_rules_catch_an_upward_import(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("def f():\n    from keras_rankmixer.commands import train\n")
    assert _room(next(iter(_imports(path)))) == "commands" not in ALLOWED["layers"]
    path.write_text("import keras_rankmixer\nfrom keras_rankmixer import layers, Ranker\n")
    assert _imports(path) == {"keras_rankmixer", "keras_rankmixer.layers"}


def test_nothing_outside_commands_imports_commands():
    offenders = [
        name
        for name, path in MODULES
        if _room(name) not in ("commands", "cli")
        and any(_room(t) == "commands" for t in _imports(path))
    ]
    assert not offenders, offenders
