"""Weights & Biases logging that needs no network: online when the user is logged in, offline otherwise."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger


def wandb_logged_in() -> bool:
    """Whether a W&B API key is configured (``WANDB_API_KEY`` or ``~/.netrc``); checked without the network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


class Wandb(WandbLogger):
    """Lightning's ``WandbLogger`` that runs offline unless you are logged in (``wandb sync`` uploads later).

    An explicit ``WANDB_MODE`` (``disabled``, ``offline``, ``online``) takes precedence over that choice;
    ``WANDB_MODE=disabled`` turns it off entirely.

    Args:
        project: W&B project.
        name: Run name.
        save_dir: Folder for the local run files.
        offline: Force offline (True) or online (False); ``None`` decides by whether you are logged in.
        log_model: Upload checkpoints as artifacts (see ``WandbLogger``).
        **kwargs: Passed to ``WandbLogger`` / ``wandb.init``.
    """

    def __init__(
        self,
        project: str = "ltune",
        name: str | None = None,
        save_dir: str = "runs",
        offline: bool | None = None,
        log_model: bool | str = False,
        **kwargs: Any,
    ) -> None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        if offline is None:  # an explicit WANDB_MODE wins (Lightning would overwrite it with "dryrun" when offline)
            offline = False if os.environ.get("WANDB_MODE") else not wandb_logged_in()
        super().__init__(project=project, name=name, save_dir=save_dir, offline=offline, log_model=log_model, **kwargs)
