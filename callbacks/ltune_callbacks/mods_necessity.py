"""MoDS's necessity stage as a round of :class:`~ltune.callbacks.rounds.Rounds` (Du et al., 2023, arXiv:2311.15653).

Round 0 trains on the seed set that :class:`ltune.datamodules.MoDS` selected. The E-step then answers every other
high-quality instruction with the model just trained (greedy decoding; MoDS used beam search with 4 beams), scores
(instruction, answer) with the MoDS reward, and keeps the rows whose answer scores below ``beta`` (k-center-reduced
to ``augment_size``). Round 1 retrains the base model (``reset_to_base``) on seed set ∪ necessary rows.

    ltune fit --config configs/selection/mods.yaml
"""

from __future__ import annotations

import lightning as L

from ltune.callbacks.rounds import Rounds


class MoDSNecessity(Rounds):
    """Seed M-step, necessity E-step, then the base model retrained on seed ∪ necessary rows.

    Args:
        epochs_per_round: Epochs of each M-step (MoDS: 3).
        batch_size: Instructions per generation batch.
        chunk_size: E-step items per chunk (the unit of resume and of sharding over ranks).
        seed: Seed of the E-step chunks; None: the run's seed (``seed_everything``).
        output_dir: Folder of the produced data; relative paths go under the run's log folder.
    """

    def __init__(
        self,
        epochs_per_round: int = 3,
        batch_size: int = 32,
        chunk_size: int = 256,
        seed: int | None = None,
        output_dir: str = "rounds",
    ) -> None:
        super().__init__(
            rounds=2,
            epochs_per_round=epochs_per_round,
            reset_to_base=True,
            start_with_e_step=False,
            chunk_size=chunk_size,
            seed=seed,
            output_dir=output_dir,
        )
        self.batch_size = batch_size

    def e_step_items(self, trainer: L.Trainer, pl_module: L.LightningModule, round: int) -> list[dict]:
        return [{"index": i} for i in trainer.datamodule.necessity_candidates()]

    def e_step(self, trainer: L.Trainer, pl_module: L.LightningModule, round: int, items: list[dict]) -> list[dict]:
        dm, out = trainer.datamodule, []
        for s in range(0, len(items), self.batch_size):
            index = [it["index"] for it in items[s : s + self.batch_size]]
            ids, mask = dm.answer_prompts(index)
            texts = pl_module.generate_text(ids, mask)
            rewards = dm.answer_rewards(index, texts)
            out += [{"index": i, "generated": t, "reward": float(r)} for i, t, r in zip(index, texts, rewards)]
        return out

    def train_rows(self, trainer: L.Trainer, pl_module: L.LightningModule, round: int, produced: list[dict]):
        return trainer.datamodule.with_necessary([p["index"] for p in produced], [p["reward"] for p in produced])

    def round_metrics(self, round: int, produced: list[dict], rows: list[dict]) -> dict[str, float]:
        bad = sum(p["reward"] for p in produced) / max(1, len(produced))
        return {"rows": float(len(rows)), "candidates": float(len(produced)), "mean_generated_reward": bad}
