"""The package graph is one-way: each part of hat imports only the layers below it, never upwards or sideways.

    errors -> config -> text, sampling -> data -> models -> checkpoint -> sessions, compress -> byteprob -> kinds
      -> train, evaluate, generate, convert -> cli

A module may import its own part (`hat.data.*` inside `hat.data`) and any part of a lower layer; parts that share a
layer are independent of each other. Lazy imports inside functions count too: an upward import hidden in a function
is still a cycle.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

from support import REPO

LAYERS = [
    {"hat.errors", "hat.machine_load"},
    {"hat.config"},
    {"hat.text", "hat.sampling"},
    {"hat.data"},
    {"hat.models"},
    {"hat.checkpoint"},
    {"hat.sessions", "hat.compress"},
    {"hat.byteprob"},
    {"hat.kinds"},
    {"hat.train", "hat.evaluate", "hat.generate", "hat.convert"},
    {"hat.cli"},
]
LAYER_OF = {part: index for index, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str:
    """`hat.data.corpus` -> `hat.data`; `hat.evaluate` -> `hat.evaluate`."""
    return ".".join(module.split(".")[:2])


def imports(path: Path, root: Path) -> set[str]:
    """The hat modules one file imports (top-level and inside functions; `from hat import x` counts `hat.x`)."""
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("hat.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "hat":
                found |= {f"hat.{alias.name}" for alias in node.names}
            elif node.module.startswith("hat."):
                found.add(node.module)
    return {name for name in found if part_of(name) != part_of(module)}


def violations(root: Path) -> list[str]:
    """Every import under `root / "hat"` that goes upwards or sideways, or out of a part no layer lists."""
    problems = []
    for path in sorted((root / "hat").rglob("*.py")):
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        if module in ("hat", "hat.__init__"):
            continue
        own = LAYER_OF.get(part_of(module))
        if own is None:
            problems.append(f"{module}: part {part_of(module)} is in no layer of tests/test_architecture.py")
            continue
        for target in sorted(imports(path, root)):
            layer = LAYER_OF.get(part_of(target))
            if layer is None or layer >= own:
                problems.append(f"{module} imports {target} (layer {layer} >= its own {own})")
    return problems


def test_the_package_graph_is_one_way():
    assert violations(REPO) == []


def test_an_upward_import_is_caught(tmp_path):
    """The check itself: a copy of the package with one import turned upwards (data -> train) fails it."""
    shutil.copytree(REPO / "hat", tmp_path / "hat", ignore=shutil.ignore_patterns("__pycache__"))
    corpus = tmp_path / "hat" / "data" / "corpus.py"
    upward = "\n\ndef _late():\n    from hat.train.loop import train\n\n    return train\n"
    corpus.write_text(corpus.read_text() + upward)
    assert violations(tmp_path) == ["hat.data.corpus imports hat.train.loop (layer 9 >= its own 3)"]


def test_no_module_outside_the_registry_branches_on_the_model_kind():
    """`model.kind` / `data.format` decide things in `hat.kinds` (and the network table of `hat.models`) only."""
    offenders = []
    for path in [*sorted((REPO / "hat").rglob("*.py")), *sorted((REPO / "scripts").rglob("*.py"))]:
        if "kinds" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if any(pattern in line for pattern in ("kind ==", "kind !=", "format ==", "format !=", ".kind in ")):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
