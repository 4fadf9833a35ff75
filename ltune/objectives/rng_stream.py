"""The RNG stream of an objective that samples in its training step, kept across a resume (a mixin of GRPO)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from ltune.objectives.checkpoint import per_rank


class OwnRNG:
    """Training steps that draw random numbers (sampling, dropout) from the objective's own stream, saved in
    checkpoints for every rank: a run resumed from a checkpoint samples as the uninterrupted run did."""

    _rng_state: dict[str, Tensor] | None = None

    @contextlib.contextmanager
    def own_rng(self) -> Iterator[None]:
        """Run a block on this objective's RNG stream (torch CPU and this device's CUDA generator): it forks from the
        global state at the first step and is then untouched by anything else that draws random numbers (data loader
        iterators, validation, callbacks), and Lightning checkpoints (which keep no RNG state) carry it."""
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            if self._rng_state is not None:
                torch.set_rng_state(self._rng_state["cpu"])
                if cuda and "cuda" in self._rng_state:
                    torch.cuda.set_rng_state(self._rng_state["cuda"], self.device)
            yield
            self._rng_state = {"cpu": torch.get_rng_state()}
            if cuda:
                self._rng_state["cuda"] = torch.cuda.get_rng_state(self.device)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["rng_streams"] = per_rank(self._rng_state)  # one stream per rank

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        states = checkpoint.get("rng_streams") or [None]  # None: an older checkpoint, the stream forks afresh
        self._rng_state = states[self.global_rank % len(states)]
