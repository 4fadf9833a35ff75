"""DPO (and cDPO, IPO, TRL's other DPO loss types and their weighted sums) against a reference, live or cached; SimPO
without one.

ltune fit --config configs/objectives/dpo.yaml
ltune fit --config configs/objectives/simpo.yaml
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor
from torch.utils.data import DataLoader, Subset

from ltune.losses.dpo import dpo_mix_loss, sequence_logps, simpo_loss
from ltune.losses.dpo_types import DPOLossType, check_loss_types
from ltune.objectives.preference import PairObjective
from ltune.objectives.reference_cache import ReferenceLogps, cache_name, pair_keys
from ltune.seeding import run_seed

log = logging.getLogger(__name__)


class DPO(PairObjective):
    """Direct Preference Optimization (Rafailov et al., 2023, arXiv:2305.18290) on ``PreferenceData`` batches, with
    every loss type of TRL 1.16's ``DPOTrainer``, alone or in a weighted sum.

    The reference is the policy as loaded: with LoRA the policy with its adapter disabled (no second model), without
    LoRA a frozen copy. With ``precompute_ref_log_probs`` every training and validation pair's reference log-probs are
    computed once when fitting starts (a no-grad pass over the data, on every rank its shard) and cached in
    ``cache_dir`` (see :mod:`ltune.objectives.reference_cache`); the steps then run the policy alone, and the frozen
    copy is freed. A rerun on the same data and model reads the file instead. Logs TRL's DPO metric names under
    ``train/`` and ``val/``: ``loss``, ``rewards/{chosen,rejected,accuracies,margins}``, ``logps/{chosen,rejected}``.

    Args:
        beta: Inverse temperature of the implicit reward (IPO's tau); TRL default 0.1.
        loss_type: A name or a list of names, TRL's (formulas in :mod:`ltune.losses.dpo_types`): ``sigmoid`` (DPO;
            cDPO with ``label_smoothing``), ``hinge`` (SLiC/RSO), ``ipo``, ``exo_pair`` (EXO; needs
            ``label_smoothing``), ``nca_pair``, ``robust`` (robust DPO), ``bco_pair``, ``sppo_hard``, ``aot`` and
            ``aot_unpaired`` (sorted over each rank's batch), ``apo_zero``, ``apo_down``, ``discopop``, ``sft`` (NLL
            of the chosen responses), ``sigmoid_norm`` (length-normalised DPO, Tulu 3).
        loss_weights: One weight per loss type (default all 1.0); the loss is ``sum_k w_k * mean_k``, e.g. MPO's
            ``[sigmoid, bco_pair, sft]`` with ``[0.8, 0.2, 1.0]``.
        label_smoothing: Label-flip probability eps in ``[0, 0.5)`` of ``sigmoid`` (cDPO), ``robust``, ``exo_pair``,
            ``aot`` and ``aot_unpaired``; an error with types that do not read it.
        discopop_tau: DiscoPOP's temperature (TRL's and the paper's default 0.05).
        precompute_ref_log_probs: Compute the reference log-probs once before fitting and cache them on disk.
        cache_dir: Folder of the reference cache (moves with ``--trainer.default_root_dir``).
        **kwargs: Arguments of :class:`~ltune.objectives.base.Objective` (backbone, optimizer, scheduler, ...).
    """

    def __init__(
        self,
        beta: float = 0.1,
        loss_type: DPOLossType | list[DPOLossType] = "sigmoid",
        loss_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        discopop_tau: float = 0.05,
        precompute_ref_log_probs: bool = False,
        cache_dir: str = "runs/reference_cache",
        **kwargs,
    ) -> None:
        loss_types, weights = check_loss_types(loss_type, loss_weights, label_smoothing, discopop_tau)
        super().__init__(**kwargs)
        self.beta, self.loss_type, self.label_smoothing = beta, loss_type, label_smoothing
        self.loss_types, self.loss_weights, self.discopop_tau = loss_types, weights, discopop_tau
        self.precompute_ref_log_probs, self.cache_dir = precompute_ref_log_probs, cache_dir
        self.ref_cache: ReferenceLogps | None = None

    def needs_reference_copy(self) -> bool:
        return True

    # ---- the reference ------------------------------------------------------------------------------------------
    def live_reference(self, batch: dict) -> tuple[Tensor, Tensor]:
        """``([B], [B])`` summed response log-probs of the chosen and rejected sequences under the reference."""
        if self.precompute_ref_log_probs and self.backbone.lora is None and not self._frozen_reference:
            raise RuntimeError(
                "a pair is missing from the reference cache and the frozen reference was freed after precomputing: "
                "rows changed during fit (a round callback?); turn precompute_ref_log_probs off"
            )
        with self.reference() as ref:
            logps = sequence_logps(self.pair_logprobs(ref, batch), self.response_mask(batch))
        n = logps.shape[0] // 2
        return logps[:n], logps[n:]

    def reference_logps(self, batch: dict) -> tuple[Tensor, Tensor]:
        if self.ref_cache is not None:
            keys = pair_keys(batch)
            cached = self.ref_cache.lookup(keys, self.device)
            if cached is not None:
                return cached
            chosen, rejected = self.live_reference(batch)
            self.ref_cache.add(keys, chosen, rejected)
            return chosen, rejected
        return self.live_reference(batch)

    def reference_config(self) -> dict:
        """What the reference log-probs depend on besides the pairs' tokens: the model as loaded, without LoRA."""
        config = dataclasses.asdict(self.backbone)
        for key in ("lora", "gradient_checkpointing", "system_prompt"):  # the prompt style is in the tokens
            config.pop(key)
        if self.backbone.is_tiny:
            config["tiny"]["init_seed"] = run_seed(self.backbone.tiny.init_seed)
        return config

    def on_fit_start(self) -> None:
        if self.precompute_ref_log_probs:
            self.ref_cache = self.precompute_reference()
            self.drop_reference_copy()

    def _pair_loaders(self) -> list[DataLoader]:
        """Sequential loaders over this rank's shard of the training and validation pairs (standard DataModule
        methods: the collate function and dataset of each loader, unshuffled)."""
        dm, world, rank = self.trainer.datamodule, self.trainer.world_size, self.trainer.global_rank
        if dm is None:
            raise ValueError("precompute_ref_log_probs needs a DataModule passed to fit (its loaders are read)")
        val = dm.val_dataloader() if is_overridden("val_dataloader", dm) else []
        loaders = [dm.train_dataloader(), *(val if isinstance(val, (list, tuple)) else [val])]
        out = []
        for dl in loaders:
            shard = Subset(dl.dataset, range(rank, len(dl.dataset), world))
            out.append(DataLoader(shard, batch_size=dl.batch_size or 8, collate_fn=dl.collate_fn))
        return out

    def precompute_reference(self) -> ReferenceLogps:
        batches = [(b, pair_keys(b)) for dl in self._pair_loaders() for b in dl if "input_ids" in b]
        keys = [k for _, batch_keys in batches for k in batch_keys]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, keys)
            keys = [k for part in gathered for k in part]
        config = self.reference_config()
        cache = ReferenceLogps(Path(self.cache_dir) / f"{cache_name(keys, config)}.json")
        if all(k in cache for k in keys):
            log.info("reference log-probs of %d pairs read from %s", len(set(keys)), cache.path)
            return cache
        was_training = self.model.training
        self.model.eval()
        for batch, batch_keys in batches:
            if not all(k in cache for k in batch_keys):
                chosen, rejected = self.live_reference(self.transfer_batch_to_device(batch, self.device, 0))
                cache.add(batch_keys, chosen.cpu(), rejected.cpu())
        self.model.train(was_training)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, cache.values)
            for part in parts:
                cache.values.update(part)
        if self.trainer.is_global_zero:
            cache.save({"reference": config, "pairs": len(cache.values)})
        self.trainer.strategy.barrier()
        log.info("reference log-probs of %d pairs computed and cached in %s", len(cache.values), cache.path)
        return cache

    # ---- the loss -------------------------------------------------------------------------------------------------
    def forward_loss(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        lp, response = self.pair_logprobs(self.model, batch), self.response_mask(batch)
        ref_chosen, ref_rejected = self.reference_logps(batch)
        n = lp.shape[0] // 2
        return dpo_mix_loss(
            lp[:n],
            lp[n:],
            response[:n],
            response[n:],
            ref_chosen,
            ref_rejected,
            beta=self.beta,
            loss_type=self.loss_types,
            loss_weights=self.loss_weights,
            label_smoothing=self.label_smoothing,
            discopop_tau=self.discopop_tau,
        )


class SimPO(PairObjective):
    """Simple Preference Optimization (Meng et al., 2024, arXiv:2405.14734): no reference model, the length-normalised
    log-likelihood as the implicit reward, a target margin gamma. Logs the names of TRL's CPO trainer with
    ``loss_type="simpo"``: ``loss``, ``rewards/{chosen,rejected,accuracies,margins}``, ``logps/{chosen,rejected}``
    (mean per-token log-probs).

    Args:
        beta: Scale of the reward (the paper's beta, swept 2.0-10).
        gamma: Target reward margin (the paper's gamma).
        label_smoothing: Label-flip probability in ``[0, 0.5)``; 0 is SimPO.
        **kwargs: Arguments of :class:`~ltune.objectives.base.Objective` (backbone, optimizer, scheduler, ...).
    """

    def __init__(self, beta: float = 2.0, gamma: float = 1.0, label_smoothing: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= label_smoothing < 0.5:
            raise ValueError(f"label_smoothing={label_smoothing} must lie in [0, 0.5)")
        self.beta, self.gamma, self.label_smoothing = beta, gamma, label_smoothing

    def forward_loss(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        lp, response = self.pair_logprobs(self.model, batch), self.response_mask(batch)
        n = lp.shape[0] // 2
        return simpo_loss(
            lp[:n],
            lp[n:],
            response[:n],
            response[n:],
            beta=self.beta,
            gamma=self.gamma,
            label_smoothing=self.label_smoothing,
        )
