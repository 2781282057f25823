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


#: The deprecated re-export shims of the old layout (#17) and where their names live now.
SHIMS = {
    "keras_rankmixer.runs": "keras_rankmixer.training",
    "keras_rankmixer.moe_callbacks": "keras_rankmixer.training.moe_monitor",
    "keras_rankmixer.data.readers": "keras_rankmixer.data",
}


def _stdlib_imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_only_the_cli_parses_arguments():
    offenders = [
        name
        for name, path in MODULES
        if _room(name) not in ("commands", "cli") and "argparse" in _stdlib_imports(path)
    ]
    assert not offenders, f"library modules may not import argparse: {offenders}"


def _imported_modules(path: pathlib.Path) -> set[str]:
    """Every module an `import` names, with `from a.b import c` read as `a.b` and `a.b.c`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_nothing_in_the_package_imports_a_deprecated_shim():
    """Neither the package nor its benchmarks (only the shims' own tests import them)."""
    root = PACKAGE.parent
    scripts = [
        (str(path.relative_to(root)), path) for path in sorted((root / "benchmarks").rglob("*.py"))
    ]
    offenders = {
        name: sorted(set(SHIMS) & _imported_modules(path))
        for name, path in MODULES + scripts
        if name not in SHIMS
    }
    offenders = {name: shims for name, shims in offenders.items() if shims}
    assert not offenders, f"import from the new modules instead: {offenders}"


def test_the_shim_rule_sees_every_import_form(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(
        "from keras_rankmixer.data import readers\n"
        "def f():\n    import keras_rankmixer.runs\n"
        "from keras_rankmixer import moe_callbacks\n"
    )
    assert set(SHIMS) <= _imported_modules(path)


@pytest.mark.parametrize("shim", sorted(SHIMS))
def test_a_shim_only_reexports_and_warns(shim):
    path = PACKAGE.parent.joinpath(*shim.split(".")).with_suffix(".py")
    body = ast.parse(path.read_text()).body
    assert ast.get_docstring(ast.Module(body=body, type_ignores=[])), shim
    new_home = SHIMS[shim]
    for node in body[1:]:
        if isinstance(node, ast.ImportFrom):
            assert node.module.startswith(new_home), (shim, node.module)
        elif isinstance(node, ast.Import):
            assert [a.name for a in node.names] == ["warnings"], shim
        elif isinstance(node, ast.Assign):
            assert [t.id for t in node.targets] == ["__all__"], shim
        else:
            assert isinstance(node, ast.Expr) and ast.unparse(node.value).startswith(
                "warnings.warn("
            ), (shim, ast.unparse(node))
            assert "DeprecationWarning" in ast.unparse(node.value) and new_home in ast.unparse(
                node.value
            ), shim


@pytest.mark.parametrize("shim", sorted(SHIMS))
def test_importing_a_shim_warns(shim):
    import importlib

    module = importlib.import_module(shim)
    with pytest.warns(DeprecationWarning, match=SHIMS[shim]):
        importlib.reload(module)
