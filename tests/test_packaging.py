"""The sibling folders install inside the ltune namespace; `kernels` and `callbacks` stay free for other packages."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_namespace_mapping_outside_the_repo(tmp_path):
    code = (
        "import importlib.util, ltune.kernels, ltune.callbacks, ltune.datamodules;"
        "print(ltune.kernels.__file__);"
        "spec = importlib.util.find_spec('kernels');"
        "print(spec.origin if spec else None)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    ours, bare = out.stdout.split()
    assert Path(ours).resolve() == (ROOT / "kernels" / "__init__.py").resolve()
    assert bare == "None" or Path(bare).resolve() != Path(ours).resolve()


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
    for f in ["ltune/cli.py", "ltune/kernels/__init__.py", "ltune/datamodules/base.py", "ltune/callbacks/export.py"]:
        assert f in names, f
    assert not any(n.startswith(("kernels/", "callbacks/", "datamodules/")) for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ltune = ltune.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()
