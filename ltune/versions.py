"""What a run ran on: the resolved versions of the stack and the machine (a leaf module: the standard library only).

``ltune env`` prints it (paste it into a bug report); CI prints it at the top of its log, so a result can always be
tied to the releases pip resolved that day.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

STACK = (
    "ltune",
    "torch",
    "lightning",
    "transformers",
    "kernels",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "tokenizers",
    "torchmetrics",
    "jsonargparse",
    "wandb",
    "triton",
    "math-verify",
    "sentence-transformers",
    "numpy",
)


def stack_versions(names: tuple[str, ...] = STACK) -> dict[str, str | None]:
    """Installed version of each distribution in ``names`` (``None`` when it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def machine() -> dict[str, str | int | None]:
    """Python, platform, processor count and load average (1 minute) of this machine."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_1m": None if load is None else round(load, 2),
    }


def report() -> str:
    """The text ``ltune env`` prints: one ``name: value`` line each, machine first."""
    rows = {**machine(), **{k: v or "not installed" for k, v in stack_versions().items()}}
    return "\n".join(f"{k}: {v}" for k, v in rows.items())
