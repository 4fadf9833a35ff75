"""Self-training rounds inside one ``Trainer.fit``: a round is an M-step (train on the current rows for
``epochs_per_round`` epochs) followed by an E-step (produce the next rows with the model just trained).
ReST-EM, Lion, MoDS's necessity stage and Cherry's pre-experienced stage are all rounds.

Writing a loop (subclass :class:`Rounds`, override three methods)::

    class MyLoop(Rounds):
        def e_step_items(self, trainer, pl_module, round):   # work items of the E-step producing `round`'s rows
            return problems                                  # a deterministic list of JSON-able dicts
        def e_step(self, trainer, pl_module, round, items):  # one chunk of items -> produced dicts (JSON-able)
            return [...]
        def train_rows(self, trainer, pl_module, round, produced):  # all produced dicts -> training rows
            return [...]                                     # rows of the DataModule's format (validated there)

and optionally ``round_metrics(round, produced, rows)`` (figures logged as ``round/<name>``) and
``end_of_round(trainer, pl_module, round)`` (after a round's M-step and held-out metrics; True stops the loop).

What the base guarantees:

* **Schedule.** ``max_epochs`` is set to ``rounds * epochs_per_round`` and ``reload_dataloaders_every_n_epochs`` to
  ``epochs_per_round``; the E-step runs at the end of the last epoch of a round, hands the rows to the DataModule
  through ``LTuneData.set_train_rows`` and Lightning reloads the train dataloader. With ``start_with_e_step`` the
  first E-step runs at fit start with the initial model, so round 0 already trains on produced rows (ReST-EM);
  otherwise round 0 trains on the DataModule's own train set (MoDS seed stage, Lion's first imitation).
* **Reset.** With ``reset_to_base`` the weights are reloaded from the backbone (``Backbone.load_model``) and the
  optimizers and schedulers re-created after every E-step, so each M-step starts from the base model.
* **Files.** Under ``<log_dir>/<output_dir>/round_<r>/``: ``chunk_<i>.jsonl`` (E-step output of chunk ``i``) and
  ``train.jsonl`` (the training rows of round ``r``), each written to a temporary name, fsynced and renamed, so a
  file is complete or absent. ``rounds.json`` keeps every round's metrics (``held_out/*`` are the ``val/*``
  metrics after that round's M-step). ``last.ckpt`` is written before and after each E-step.
* **Determinism and resume.** Chunk ``i`` of round ``r`` runs with torch/python/numpy RNGs seeded from
  ``(seed, r, i)``, so its output does not depend on what ran before it. Chunks already on disk are never
  recomputed: after a kill in the middle of an E-step, ``--ckpt_path <log_dir>/<output_dir>/last.ckpt`` restores
  the round index, the produced-data paths and the global RNG state from the checkpoint, computes only the missing
  chunks, and ends with the same rows as an uninterrupted run. Resuming from any checkpoint mid-M-step reloads that
  round's ``train.jsonl``. Under DDP chunk ``i`` runs on rank ``i % world_size`` (a shared filesystem is assumed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities.seed import isolate_rng
from tqdm.auto import tqdm

from ltune.io import atomic_write_jsonl, atomic_write_text
from ltune.seeding import run_seed

log = logging.getLogger(__name__)


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def chunk_seed(seed: int, round: int, chunk: int) -> int:
    """A 63-bit seed of one E-step chunk, independent of everything that ran before it."""
    digest = hashlib.sha256(f"ltune.rounds:{seed}:{round}:{chunk}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class Rounds(L.Callback):
    """Base of self-training loops: M-step (fit on the current rows), then E-step (produce the next rows).

    Args:
        rounds: Number of M-steps; an E-step runs between consecutive ones (and first, with ``start_with_e_step``).
        epochs_per_round: Epochs of each M-step.
        reset_to_base: Reload the base weights and fresh optimizers before every M-step after the first.
        start_with_e_step: Produce round 0's rows with the initial model at fit start instead of training round 0
            on the DataModule's own train set.
        chunk_size: E-step items per chunk (the unit of resume and of sharding over ranks).
        seed: Seed of the E-step chunks (None: the run's seed, ``seed_everything``).
        output_dir: Folder of the produced data; relative paths go under the run's log folder.
    """

    def __init__(
        self,
        rounds: int = 3,
        epochs_per_round: int = 1,
        reset_to_base: bool = False,
        start_with_e_step: bool = False,
        chunk_size: int = 64,
        seed: int | None = None,
        output_dir: str = "rounds",
    ) -> None:
        if rounds < 1 or epochs_per_round < 1 or chunk_size < 1:
            raise ValueError(
                f"rounds, epochs_per_round and chunk_size must be >= 1, got {rounds}, {epochs_per_round}, {chunk_size}"
            )
        self.rounds, self.epochs_per_round = rounds, epochs_per_round
        self.reset_to_base, self.start_with_e_step = reset_to_base, start_with_e_step
        self.chunk_size, self.seed, self.output_dir = chunk_size, run_seed(seed), output_dir
        self.round, self.phase = 0, "m"  # phase "e": the M-step of `round` is done, its E-step is under way
        self.dir: Path | None = None
        self.paths: dict[int, str] = {}  # round -> its train.jsonl
        self.history: list[dict] = []
        self._restored = False
        self._reset_optimizers = False

    # ---- the loop's API -----------------------------------------------------------------------------------------
    def e_step_items(self, trainer: L.Trainer, pl_module: L.LightningModule, round: int) -> list[dict]:
        """The work items of the E-step that produces the rows of ``round`` (deterministic)."""
        raise NotImplementedError

    def e_step(self, trainer: L.Trainer, pl_module: L.LightningModule, round: int, items: list[dict]) -> list[dict]:
        """Produce JSON-able dicts for one chunk of items (RNGs are seeded per chunk by the caller)."""
        raise NotImplementedError

    def train_rows(
        self, trainer: L.Trainer, pl_module: L.LightningModule, round: int, produced: list[dict]
    ) -> list[dict]:
        """The training rows of ``round`` from everything its E-step produced (default: the produced dicts)."""
        return produced

    def round_metrics(self, round: int, produced: list[dict], rows: list[dict]) -> dict[str, float]:
        """Figures of one E-step, logged as ``round/<name>`` (default: the number of training rows)."""
        return {"rows": float(len(rows))}

    def end_of_round(self, trainer: L.Trainer, pl_module: L.LightningModule, round: int) -> bool:
        """Runs after ``round``'s M-step with its ``held_out/*`` recorded, before the next E-step (and after the last
        round, before any ``on_train_end``). Return True to stop the loop: no further E-step or M-step."""
        return False

    # ---- Lightning hooks ----------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if trainer.max_steps not in (-1, None):
            raise ValueError(
                f"{type(self).__name__} schedules epochs (rounds x epochs_per_round); "
                f"leave trainer.max_steps unset (got {trainer.max_steps})"
            )
        if not hasattr(trainer.datamodule, "set_train_rows"):
            raise TypeError(f"{type(self).__name__} needs an ltune DataModule (with set_train_rows)")
        trainer.fit_loop.max_epochs = self.rounds * self.epochs_per_round
        trainer.reload_dataloaders_every_n_epochs = self.epochs_per_round

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # weights and this callback's state are restored by now; loops and optimizers are restored after this hook
        if self.dir is None:
            out = Path(self.output_dir)
            self.dir = out if out.is_absolute() else Path(trainer.log_dir or trainer.default_root_dir) / out
        if not self._restored and self.start_with_e_step and 0 not in self.paths:
            self._produce(trainer, pl_module, 0)
        elif self._restored and self.phase == "e":  # killed during an E-step: finish it
            self._next_round(trainer, pl_module)
        if self.round in self.paths:
            trainer.datamodule.set_train_rows(read_jsonl(self.paths[self.round]))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._reset_optimizers:  # after a resume the old optimizer state was restored after on_fit_start
            trainer.strategy.setup_optimizers(trainer)
            self._reset_optimizers = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.epochs_per_round:
            return
        self._record(
            trainer,
            self.round,
            {f"held_out/{k[4:]}": float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
        )
        stop = trainer.strategy.reduce_boolean_decision(
            bool(self.end_of_round(trainer, pl_module, self.round)), all=False
        )
        if stop:
            trainer.should_stop = True
        if stop or self.round + 1 >= self.rounds:
            return
        self.phase = "e"
        self._checkpoint(trainer)
        self._next_round(trainer, pl_module)
        trainer.datamodule.set_train_rows(read_jsonl(self.paths[self.round]))
        if self._reset_optimizers:
            trainer.strategy.setup_optimizers(trainer)
            self._reset_optimizers = False
        self._checkpoint(trainer)

    # ---- state --------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, gauss = np.random.get_state()  # plain types: checkpoints load with weights_only
        rng = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "round": self.round,
            "phase": self.phase,
            "dir": None if self.dir is None else str(self.dir),
            "paths": dict(self.paths),
            "history": list(self.history),
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round, self.phase = state["round"], state["phase"]
        self.dir = None if state["dir"] is None else Path(state["dir"])
        self.paths = {int(k): v for k, v in state["paths"].items()}
        self.history = list(state["history"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        name, keys, pos, has_gauss, gauss = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self._restored = True

    # ---- machinery ----------------------------------------------------------------------------------------------
    def _next_round(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """E-step for round + 1, then (optionally) back to the base weights; phase becomes "m" again."""
        self._produce(trainer, pl_module, self.round + 1)
        if self.reset_to_base:
            self._load_base(pl_module)
            self._reset_optimizers = True
        self.round, self.phase = self.round + 1, "m"

    def _produce(self, trainer: L.Trainer, pl_module: L.LightningModule, round: int) -> None:
        folder = self.dir / f"round_{round}"
        items = self.e_step_items(trainer, pl_module, round)
        chunks = [items[i : i + self.chunk_size] for i in range(0, len(items), self.chunk_size)]
        world, rank = trainer.world_size, trainer.global_rank
        todo = [i for i in range(len(chunks)) if i % world == rank and not (folder / f"chunk_{i:05d}.jsonl").exists()]
        shown = trainer.progress_bar_callback is not None and trainer.is_global_zero
        bar = tqdm(
            total=sum(len(chunks[i]) for i in todo),
            desc=f"round {round} E-step",
            unit="rows",
            disable=not shown,
            leave=False,
        )
        for i in todo:  # this rank's chunks that no earlier (killed) run finished
            with self._seeded(chunk_seed(self.seed, round, i), pl_module.device):
                atomic_write_jsonl(folder / f"chunk_{i:05d}.jsonl", self.e_step(trainer, pl_module, round, chunks[i]))
            bar.update(len(chunks[i]))
        bar.close()
        trainer.strategy.barrier("rounds-e-step")
        produced = [row for i in range(len(chunks)) for row in read_jsonl(folder / f"chunk_{i:05d}.jsonl")]
        with self._seeded(chunk_seed(self.seed, round, -1), pl_module.device):
            rows = self.train_rows(trainer, pl_module, round, produced)
        if not rows:
            raise RuntimeError(
                f"{type(self).__name__}: the E-step of round {round} produced no training rows ({folder}); "
                "start from a stronger model, sample more, or loosen the filter"
            )
        path = folder / "train.jsonl"
        if trainer.is_global_zero:
            atomic_write_jsonl(path, rows)
        trainer.strategy.barrier("rounds-train-rows")
        self.paths[round] = str(path)
        self._record(trainer, round, self.round_metrics(round, produced, rows))

    def _record(self, trainer: L.Trainer, round: int, metrics: dict[str, float]) -> None:
        entry = next((h for h in self.history if h["round"] == round), None)
        if entry is None:
            entry = {"round": round}
            self.history.append(entry)
        entry.update(metrics)
        if trainer.is_global_zero:
            atomic_write_text(self.dir / "rounds.json", json.dumps(self.history, indent=1))
            for logger in trainer.loggers:
                logger.log_metrics(
                    {"round/index": round, **{f"round/{k}": v for k, v in metrics.items()}}, step=trainer.global_step
                )
        log.info("round %d: %s", round, metrics)

    def _checkpoint(self, trainer: L.Trainer) -> None:
        tmp, final = self.dir / ".last.ckpt.tmp", self.dir / "last.ckpt"
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, final)
        trainer.strategy.barrier("rounds-checkpoint")

    def _load_base(self, pl_module: L.LightningModule) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)  # LoRA initialisation draws from the RNG
            base = pl_module.backbone.load_model()
        pl_module.model.load_state_dict(base.state_dict())

    @staticmethod
    @contextlib.contextmanager
    def _seeded(seed: int, device: torch.device):
        """Run a block with torch/python/numpy RNGs seeded, restoring the previous states afterwards."""
        with isolate_rng(include_cuda=device.type == "cuda"):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            yield
