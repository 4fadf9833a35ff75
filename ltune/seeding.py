"""The run's seed, which every seeded component takes unless it is given its own (a leaf module: stdlib only).

``seed_everything: S`` (``--seed_everything S``; LightningCLI calls Lightning's ``seed_everything`` before it builds
the model and data, and Lightning records the seed in ``PL_GLOBAL_SEED``) is the one knob of a run: the ``tiny``
initialisation, the training problems drawn, the shuffling order, and the seeds of E-step chunks all derive from it.
A component whose own ``seed`` is set keeps it; held-out sets (``EmbeddedTasks`` of split ``val``/``test``) keep a
fixed seed 0 of their own, so evaluations stay comparable across seeds.
"""

from __future__ import annotations

import os

ENV = "PL_GLOBAL_SEED"  # where lightning.fabric.utilities.seed.seed_everything records the seed (also for workers)


def run_seed(seed: int | None = None) -> int:
    """``seed`` when it is set, else the run's seed (``seed_everything``), else 0.

    Args:
        seed: A component's own seed, or ``None`` to follow the run's.
    """
    if seed is not None:
        return int(seed)
    return int(os.environ.get(ENV, 0))
