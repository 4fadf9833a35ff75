"""The real-model tier: SmolLM2-135M-Instruct, fetched by README's set-up (`ltune fetch smollm2-135m-instruct`).

These tests never download. A missing model is a failure, not a skip: CI must run this tier. Deselect it on a machine
without the model with ``pytest -m "not real"``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ltune import presets
from ltune.backbone import Backbone

NAME = "smollm2-135m-instruct"
ROOT = Path(__file__).resolve().parents[2]
FRAGMENT = str(ROOT / "configs/models/smollm2.yaml")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The converted folder; fails (never downloads) when README's set-up has not fetched it."""
    try:
        return presets.resolve(NAME, fetch_missing=False)
    except presets.PresetUnavailable as e:
        pytest.fail(f"{e} (README's set-up does this; or deselect this tier with -m 'not real')")


@pytest.fixture(scope="session", autouse=True)
def _all_cores():
    """The root conftest pins 1 thread for the tiny models; a 135M model wants the machine's cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(os.cpu_count() or 1, 4))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smollm2(smollm2_dir) -> Backbone:
    return Backbone(NAME)


@pytest.fixture(scope="session")
def smollm2_model(smollm2):
    """One loaded model (eval mode, frozen) shared by the in-process tests of the tier."""
    return smollm2.load_frozen()
