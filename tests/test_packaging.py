"""The sibling folders install inside the ltune namespace, and nothing in a checkout shadows another distribution.

``kernels/``, ``callbacks/`` and ``datamodules/`` are top-level folders of the repository whose modules live one
level down (``kernels/ltune_kernels/``) and install as ``ltune.kernels`` etc. The top-level folders hold no
``__init__.py``: wherever the checkout's root is on ``sys.path`` (pytest, a ``python`` started there), an installed
``kernels`` (Hugging Face's hub kernels, which transformers >= 5.25 imports) wins over a namespace folder.
"""

import importlib.metadata
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"kernels": "ltune_kernels", "callbacks": "ltune_callbacks", "datamodules": "ltune_datamodules"}


def python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True)


def test_namespace_mapping_outside_the_repo(tmp_path):
    code = (
        "import importlib.util, ltune.kernels, ltune.callbacks, ltune.datamodules.selection;"
        "print(ltune.kernels.__file__, ltune.callbacks.__file__, ltune.datamodules.selection.__file__);"
        "spec = importlib.util.find_spec('kernels');"
        "print(spec.origin if spec else None)"
    )
    out = python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    kernels, callbacks, selection, bare = out.stdout.split()
    assert Path(kernels) == ROOT / "kernels" / "ltune_kernels" / "__init__.py"
    assert Path(callbacks) == ROOT / "callbacks" / "ltune_callbacks" / "__init__.py"
    assert Path(selection) == ROOT / "datamodules" / "ltune_datamodules" / "selection" / "__init__.py"
    assert bare == "None" or not Path(bare).is_relative_to(ROOT / "kernels")


def test_a_python_started_at_the_checkout_root_imports_hub_kernels_transformers_trl_and_ltune():
    """Fails on the layout before 2026-12-03, where ``kernels/__init__.py`` made the root's ``kernels`` a regular
    package: ``cannot import name 'CUDAProperties' from 'kernels' (<checkout>/kernels/__init__.py)``."""
    try:
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("Hugging Face's `kernels` is not installed (transformers >= 5.25 installs it)")
    code = (
        "import kernels, transformers.integrations.hub_kernels, transformers.activations, trl, ltune, ltune.kernels;"
        "print(kernels.__file__)"
    )
    out = python(code, ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not Path(out.stdout.strip()).is_relative_to(ROOT / "kernels"), out.stdout


def importable_names(folder: Path) -> set[str]:
    """The names ``import`` finds in ``folder`` when it is on ``sys.path``: modules and regular packages (a folder
    without ``__init__.py`` is a namespace portion, which never shadows an installed package)."""
    modules = {p.stem for p in folder.glob("*.py")}
    packages = {p.parent.name for p in folder.glob("*/__init__.py")}
    return modules | packages


def test_no_top_level_name_of_the_checkout_shadows_an_installed_distribution_or_the_standard_library():
    taken = set(importlib.metadata.packages_distributions()) | set(sys.stdlib_module_names)
    for folder, name in MAPPED.items():  # the mapped folders stay namespace folders
        assert not (ROOT / folder / "__init__.py").exists(), f"{folder}/__init__.py makes `{folder}` shadowable"
        assert (ROOT / folder / name / "__init__.py").exists()
    owned = {"ltune"}  # the root's own package: this distribution
    clashes = {
        f"{folder.relative_to(ROOT).as_posix() or '.'}/{n}"
        # the root is on sys.path under pytest and `python` started there; a script's own folder is first for it
        for folder in (ROOT, ROOT / "benchmarks", ROOT / "examples")
        for n in importable_names(folder) - owned
        if n in taken
    }
    assert not clashes, f"these names shadow installed packages or the standard library: {sorted(clashes)}"


SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))


def test_every_benchmark_script_starts_from_the_checkout_root():
    def help_of(script: Path) -> tuple[str, subprocess.CompletedProcess]:
        cmd = [sys.executable, str(script.relative_to(ROOT)), "--help"]
        return script.name, subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(4) as pool:
        failed = {name: r.stderr[-800:] for name, r in pool.map(help_of, SCRIPTS) if r.returncode != 0}
    assert SCRIPTS and not failed, failed


def test_wheel_contains_the_mapped_packages(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("ltune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in [
        "ltune/cli.py",
        "ltune/kernels/__init__.py",
        "ltune/datamodules/base.py",
        "ltune/datamodules/selection/less.py",
        "ltune/callbacks/export.py",
    ]:
        assert f in names, f
    assert all(n.startswith("ltune") for n in names), sorted(n for n in names if not n.startswith("ltune"))
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ltune = ltune.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
