"""Imports follow the layering in CONTRIBUTING.md ("Who may import whom"): every ltune import of every library file is
parsed, mapped to its layer, and checked against the allowed edges, so a new edge fails here."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = {
    "generation",
    "continuous",
    "rewards",
    "reward_funcs",
    "judges",
    "metrics",
    "problems",
    "loggers",
}  # scoring, sampling, tasks
ALLOWED = {
    "ltune": {"objectives"},  # the package root re-exports the objectives
    "cli": {"objectives", "datamodules", "callbacks", "backbone", "io"},
    "objectives": {"losses", "kernels", "backbone", "core", "io"},
    "callbacks": {"core", "backbone", "io", "datamodules"},  # datamodules: the package's public names only
    "datamodules": {"backbone", "kernels", "core", "io"},
    "core": {"core", "backbone", "kernels", "io"},
    "backbone": {"backbone", "kernels", "io"},
    "losses": set(),
    "kernels": set(),
    "io": set(),
}
# Callbacks reach DataModules through their public methods and ``ltune.datamodules``'s exports, never a submodule.


def layer_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "ltune":
        return None
    if len(parts) == 1:
        return "ltune"
    if parts[1] in ("objectives", "losses", "kernels", "datamodules", "callbacks", "cli", "io"):
        return parts[1]
    if parts[1] in ("seeding", "versions"):  # stdlib-only leaves like io
        return "io"
    if parts[1] in ("errors", "run_record", "data_verbs"):  # the CLI's error reports, run record, select/scaling verbs
        return "cli"
    if parts[1] in ("backbone", "forward", "presets", "packing", "export"):
        return "backbone"
    if parts[1] in CORE:
        return "core"
    raise AssertionError(f"module {name} has no layer: add it to tests/test_imports.py and CONTRIBUTING.md")


def layer_of_file(path: Path) -> str:
    rel = path.relative_to(ROOT).as_posix()
    top = rel.split("/")[0]
    if top in ("kernels", "datamodules", "callbacks"):
        return top
    if rel == "ltune/__init__.py":
        return "ltune"
    parts = rel.removesuffix(".py").split("/")  # ltune/<module>.py or ltune/<package>/...
    return layer_of_module(f"ltune.{parts[1]}")


def imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: only the kernels package uses them, within itself
                out.append("ltune.kernels")
            elif node.module == "ltune":
                out += [f"ltune.{a.name}" for a in node.names]
            elif node.module:
                out.append(node.module)
    return out


def library_files() -> list[Path]:
    return sorted(p for d in ("ltune", "kernels", "datamodules", "callbacks") for p in (ROOT / d).rglob("*.py"))


def test_every_import_follows_the_layering():
    wrong = []
    for path in library_files():
        src = layer_of_file(path)
        for name in imports(path):
            dst = layer_of_module(name)
            if dst is None or dst == src:
                continue
            rel = path.relative_to(ROOT).as_posix()
            if dst not in ALLOWED[src]:
                wrong.append(f"{rel}: {src} -> {dst} ({name})")
            elif src == "callbacks" and dst == "datamodules" and name != "ltune.datamodules":
                wrong.append(f"{rel}: a callback imports DataModule internals ({name}); use a public method")
    assert not wrong, "\n".join(wrong)


def test_losses_and_kernels_import_nothing_of_ltune_and_there_is_no_cycle():
    graph: dict[str, set[str]] = {}
    for path in library_files():
        src = layer_of_file(path)
        graph.setdefault(src, set()).update(
            d for d in (layer_of_module(n) for n in imports(path)) if d is not None and d != src
        )
    assert not graph.get("losses") and not graph.get("kernels")

    def reaches(a: str, b: str, seen: set[str]) -> bool:
        return any(n == b or (n not in seen and reaches(n, b, seen | {n})) for n in graph.get(a, ()))

    cycles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if reaches(b, a, {b}))
    assert not cycles, cycles


def test_the_rules_catch_a_forbidden_edge(tmp_path):
    """The checker itself: a loss that imports the backbone is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from ltune.backbone import Backbone\nimport torch\n")
    assert [layer_of_module(n) for n in imports(bad)] == ["backbone", None]
    assert "backbone" not in ALLOWED["losses"]


def test_the_lab_imports_the_library_and_the_library_never_the_lab():
    """benchmarks/ (the lab: studies, runner, report, benchmark scripts) uses ltune; ltune never imports the lab."""
    lab = [p for p in (ROOT / "benchmarks").rglob("*.py")]
    assert any(n.split(".")[0] == "ltune" for p in lab for n in imports(p))
    wrong = [
        p.relative_to(ROOT).as_posix()
        for p in library_files()
        if any(n.split(".")[0] == "benchmarks" for n in imports(p))
    ]
    assert not wrong, wrong
