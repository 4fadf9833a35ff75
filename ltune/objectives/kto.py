"""KTO on unpaired desirable/undesirable completions, against a reference live or cached (DPO's machinery).

ltune fit --config configs/objectives/kto.yaml
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader

from ltune.forward import completion_logprobs
from ltune.kernels import IGNORE_INDEX
from ltune.losses.dpo import sequence_logps
from ltune.losses.kto import KTOLossType, kto_kl, kto_loss
from ltune.objectives.checkpoint import per_rank
from ltune.objectives.dpo import DPO
from ltune.packing import continued_hidden, row_slices

log = logging.getLogger(__name__)

DPO_LOSS_ARGS = ("loss_weights", "label_smoothing", "discopop_tau")  # DPO's own, none of KTO's

# validation metrics and the rows each is averaged over
VAL_WEIGHTS = {"loss": "all", "kl": "all", "rewards/chosen": "chosen", "logps/chosen": "chosen",
               "rewards/rejected": "rejected", "logps/rejected": "rejected"}  # fmt: skip


def stack_kl(batch: dict, kl: bool = True) -> dict:
    """The ``[2B, T]`` pair layout of :class:`~ltune.objectives.preference.PairObjective` of an
    ``UnpairedPreferenceData`` batch: its B rows, then their B KL sequences (row ``i`` and row ``B + i`` share the
    prompt, so one packed forward scores both), right-padded to one width. ``kl=False`` stacks each row with itself
    (a pair the packed forward runs once: APO-zero needs no KL sequences)."""
    if "KL_input_ids" not in batch:  # evaluation prompts, or stacked already
        return batch
    second = "KL_" if kl else ""
    width = max(batch["input_ids"].shape[1], batch[f"{second}input_ids"].shape[1])
    out = {"label": batch["label"]}
    for key, pad in (("input_ids", 0), ("attention_mask", 0), ("labels", IGNORE_INDEX)):
        a, b = batch[key], batch[f"{second}{key}"]
        out[key] = torch.cat([F.pad(t, (0, width - t.shape[1]), value=pad) for t in (a, b)])
    return out


def trimmed(pair: dict, rows: slice) -> tuple[Tensor, Tensor, Tensor]:
    """``input_ids``, ``attention_mask`` and ``labels`` of some right-padded rows of ``pair``, cut to their longest
    row (the stacked layout pads the rows and their KL sequences to one width, so one half may carry many padding
    columns)."""
    mask = pair["attention_mask"][rows]
    width = int(mask.any(0).nonzero().max()) + 1
    return pair["input_ids"][rows, :width], mask[:, :width], pair["labels"][rows, :width]


def paired_accuracy(rewards: dict[tuple[int, bool], float]) -> float | None:
    """DPO's ``rewards/accuracies`` on unpaired rows: the share of pairs whose desirable row has the higher implicit
    reward, over the pairs with both rows in ``rewards`` (keyed by ``(pair, label)``); None when there is none."""
    pairs = [(r, rewards[(p, False)]) for (p, label), r in rewards.items() if label and (p, False) in rewards]
    return sum(chosen > rejected for chosen, rejected in pairs) / len(pairs) if pairs else None


class KTO(DPO):
    """Kahneman-Tversky Optimization (Ethayarajh et al., 2024, arXiv:2402.01306) on ``UnpairedPreferenceData``
    batches: each completion desirable or not, no pairs needed (paired rows are unpaired by the data).

    The loss is :func:`ltune.losses.kto.kto_loss`, TRL's ``KTOTrainer`` loss. Its reference point ``z0`` is the batch
    estimate of ``KL(pi || pi_ref)`` from mismatched pairs: each row's prompt with another row's completion, fixed
    by the data when the split is encoded (a seeded cycle through the whole split, never a row's own completion), so
    that shuffling and the batch size change nothing. ``z0`` is computed without gradient, clamped at 0 and, while
    training under DDP, averaged over every rank's mismatched pairs (an all-reduce of their sum and count through
    ``trainer.strategy.reduce``): 2 ranks with 1 row each estimate it as 1 process with batch 2 (validation uses each
    rank's own batch: validation shards may differ in length across ranks).

    The reference is DPO's (:class:`~ltune.objectives.dpo.DPO`): with LoRA the adapter-disabled policy, without it a
    frozen copy; ``precompute_ref_log_probs`` caches the reference log-probs of every row and of its KL sequence
    before fitting. Logs TRL's KTO metric names under ``train/`` and ``val/``: ``loss``, ``kl``,
    ``rewards/{chosen,rejected,margins}`` (``beta`` times the log-ratio, averaged per label; margins when both labels
    occur) and ``logps/{chosen,rejected}``; on held-out pairs (validation rows sharing a ``pair`` id, as unpaired
    preference pairs are) also DPO's ``val/rewards/accuracies``, the share of pairs whose desirable completion has the
    higher implicit reward (:func:`paired_accuracy`). A warning says when the label counts and weights fall outside
    the paper's recommended ``desirable_weight * n_desirable / (undesirable_weight * n_undesirable)`` in ``[1, 4/3]``
    (eq. 8).

    Args:
        beta: Inverse temperature of the implicit reward; TRL default 0.1.
        desirable_weight: ``lambda_D``, weight of the desirable examples' losses; TRL default 1.0.
        undesirable_weight: ``lambda_U``, weight of the undesirable examples' losses; TRL default 1.0.
        loss_type: ``"kto"``, or ``"apo_zero_unpaired"`` (APO-zero, arXiv:2408.06266; no KL estimate).
        precompute_ref_log_probs: Compute the reference log-probs once before fitting and cache them on disk.
        cache_dir: Folder of the reference cache (moves with ``--trainer.default_root_dir``).
        **kwargs: Arguments of :class:`~ltune.objectives.preference.PairObjective` (``share_prompt``: a KL
            sequence runs only its completion, without gradient, off the KV cache of its row's prompt; False: the
            rows, then the whole KL sequences without gradient) and
            :class:`~ltune.objectives.base.Objective` (backbone, optimizer, scheduler, ...).
    """

    val_names = tuple(VAL_WEIGHTS)

    def __init__(
        self,
        beta: float = 0.1,
        desirable_weight: float = 1.0,
        undesirable_weight: float = 1.0,
        loss_type: KTOLossType = "kto",
        precompute_ref_log_probs: bool = False,
        cache_dir: str = "runs/reference_cache",
        **kwargs,
    ) -> None:
        kwargs = {k: v for k, v in kwargs.items() if k not in DPO_LOSS_ARGS}  # saved in KTO checkpoints' hparams
        super().__init__(
            beta=beta,
            loss_type="sigmoid",  # DPO's loss arguments, unused here, given so that the CLI does not offer them
            loss_weights=None,
            label_smoothing=0.0,
            discopop_tau=0.05,
            precompute_ref_log_probs=precompute_ref_log_probs,
            cache_dir=cache_dir,
            **kwargs,
        )
        if loss_type not in ("kto", "apo_zero_unpaired"):
            raise ValueError(f"loss_type must be 'kto' or 'apo_zero_unpaired', got {loss_type!r}")
        if desirable_weight < 0 or undesirable_weight < 0:
            raise ValueError(f"weights must be >= 0, got {desirable_weight} and {undesirable_weight}")
        self.loss_type, self.desirable_weight, self.undesirable_weight = loss_type, desirable_weight, undesirable_weight
        self._val_rewards: dict[tuple[int, bool], float] = {}

    @property
    def uses_kl(self) -> bool:
        return self.loss_type == "kto"

    def stacked(self, batch: dict) -> dict:
        if "label" not in batch or "KL_input_ids" not in batch:
            raise ValueError(f"KTO trains on UnpairedPreferenceData batches (label, KL_input_ids), got {list(batch)}")
        return stack_kl(batch, self.uses_kl)

    # ---- the reference: DPO's, on the stacked rows; precomputed over the same layout -----------------------------
    def _pair_loaders(self) -> list[DataLoader]:
        return [
            DataLoader(dl.dataset, batch_size=dl.batch_size, collate_fn=lambda ex, f=dl.collate_fn: self._stack(f(ex)))
            for dl in super()._pair_loaders()
        ]

    def _stack(self, batch: dict) -> dict:
        return self.stacked(batch) if "input_ids" in batch else batch

    def on_fit_start(self) -> None:
        self.warn_imbalance()
        super().on_fit_start()

    def warn_imbalance(self) -> None:
        """TRL's warning on imbalanced labels: ``w_D n_D / (w_U n_U)`` outside ``[1, 4/3]`` (KTO paper eq. 8)."""
        rows = getattr(self.trainer.datamodule, "data", {}).get("train") or []
        n_d = sum(bool(r.get("label")) for r in rows)
        n_u = len(rows) - n_d
        if not n_d or not n_u or n_d == n_u or not self.trainer.is_global_zero:
            return
        ratio = self.desirable_weight * n_d / (self.undesirable_weight * n_u) if self.undesirable_weight else math.inf
        if not 1.0 <= ratio <= 4 / 3:
            log.warning(
                "%d desirable and %d undesirable rows: desirable_weight * n_D / (undesirable_weight * n_U) = %.3g, "
                "outside the KTO paper's [1, 4/3]; e.g. desirable_weight in [%.3g, %.3g] or undesirable_weight in "
                "[%.3g, %.3g] (not both)",
                n_d,
                n_u,
                ratio,
                self.undesirable_weight * n_u / n_d,
                4 / 3 * self.undesirable_weight * n_u / n_d,
                0.75 * self.desirable_weight * n_d / n_u,
                self.desirable_weight * n_d / n_u,
            )

    # ---- the loss -------------------------------------------------------------------------------------------------
    def policy_logprobs(self, pair: dict) -> tuple[Tensor, Tensor | None]:
        """``[B, T-1]`` per-token log-probs of the rows under the policy (with gradient), and the ``[B]`` summed
        log-probs of their KL sequences (no gradient; None without a KL estimate). With ``share_prompt`` a KL
        sequence runs only its completion, off its row's KV cache (:func:`~ltune.packing.continued_hidden`). Long
        rows of unequal lengths run one at a time on CPU, without padding (:func:`~ltune.packing.row_slices`)."""
        n, width = len(pair["input_ids"]) // 2, pair["input_ids"].shape[1] - 1
        logprobs, kl_logps = [], []
        for part in row_slices(self.model, pair["attention_mask"][:n]):
            lp, kl = self._logprobs(trimmed(pair, part), trimmed(pair, slice(n + part.start, n + part.stop)))
            logprobs.append(F.pad(lp, (0, width - lp.shape[1])))
            kl_logps.append(kl)
        return torch.cat(logprobs), torch.cat(kl_logps) if self.uses_kl else None

    def _logprobs(self, rows: tuple[Tensor, ...], kl_rows: tuple[Tensor, ...]) -> tuple[Tensor, Tensor | None]:
        """The rows' per-token log-probs and their KL sequences' summed ones (see :meth:`policy_logprobs`)."""
        hidden = kl_hidden = None
        if self.uses_kl and self.share_prompt:
            hidden, kl_hidden = continued_hidden(self.model, *rows[:2], *kl_rows[:2])
        lp = completion_logprobs(self.model, *rows, hidden=hidden).logprobs
        if not self.uses_kl:
            return lp, None
        with torch.no_grad():
            kl = completion_logprobs(self.model, *kl_rows, hidden=kl_hidden).logprobs
        return lp, kl.sum(-1)

    def _all_sum(self) -> Callable[[Tensor], Tensor] | None:
        """Sum across ranks while training under data parallelism (every rank steps alike), else None."""
        if self._trainer is None or self.trainer.world_size == 1 or not self.training:
            return None
        return lambda t: self.trainer.strategy.reduce(t, reduce_op="sum")

    def forward_loss(self, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        loss, metrics, _ = self.scored(batch)
        return loss, metrics

    def scored(self, batch: dict) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """The loss and metrics of :func:`~ltune.losses.kto.kto_loss`, and each row's implicit reward
        ``beta * (log pi(y|x) - log pi_ref(y|x))`` (``[B]``, detached)."""
        pair = self.stacked(batch)
        n = len(batch["label"])
        logprobs, kl_logps = self.policy_logprobs(pair)
        ref, ref_kl = self.reference_logps(pair)
        kl = kto_kl(kl_logps, ref_kl, self._all_sum()) if self.uses_kl else None
        mask = self.response_mask(pair)[:n]
        rewards = self.beta * (sequence_logps(logprobs.detach(), mask) - ref.to(logprobs.dtype))
        loss, metrics = kto_loss(
            logprobs,
            mask,
            ref,
            batch["label"],
            kl,
            beta=self.beta,
            desirable_weight=self.desirable_weight,
            undesirable_weight=self.undesirable_weight,
            loss_type=self.loss_type,
        )
        return loss, metrics, rewards

    @staticmethod
    def _counts(batch: dict) -> dict[str, int]:
        chosen = int(batch["label"].sum())
        return {"all": len(batch["label"]), "chosen": chosen, "rejected": len(batch["label"]) - chosen}

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss, metrics = self.forward_loss(batch)
        self.check_finite(loss, batch_idx)
        counts = self._counts(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=counts["all"])
        for name, value in metrics.items():
            rows = counts[VAL_WEIGHTS.get(name, "all")]
            self.log(f"train/{name}", value, prog_bar=name == "kl", batch_size=max(rows, 1))
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if "prompt_ids" in batch:
            self.eval_step(batch)
            return
        loss, metrics, rewards = self.scored(batch)
        metrics["loss"], counts = loss, self._counts(batch)
        if "pair" in batch:  # rows of held-out pairs: scored pairwise at the end
            for pair, label, reward in zip(batch["pair"].tolist(), batch["label"].tolist(), rewards.tolist()):
                if pair >= 0:
                    self._val_rewards[(pair, label)] = reward
        for name, rows in VAL_WEIGHTS.items():  # row-weighted over the whole validation set, per label where named
            weight = counts[rows]
            value = metrics[name] if weight else torch.zeros((), device=self.device)
            self.val_metrics[name.replace("/", "_")].update(value, weight)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        rewards = {k: v for part in per_rank(self._val_rewards) for k, v in part.items()}  # every rank's rows
        self._val_rewards = {}
        accuracy = paired_accuracy(rewards)
        if accuracy is not None:
            self.log("val/rewards/accuracies", accuracy, sync_dist=False)
        if not any(per_rank(self.val_metrics["loss"].update_called)):  # decided alike on every rank
            return
        values = {}
        with torch.inference_mode(False):  # compute() gathers across ranks; reset() re-creates normal tensors
            for name in VAL_WEIGHTS:
                metric = self.val_metrics[name.replace("/", "_")]
                values[name] = metric.compute()
                metric.reset()
        values["rewards/margins"] = values["rewards/chosen"] - values["rewards/rejected"]
        for name, value in values.items():  # NaN: no row of that label (0 / 0), left out as TRL leaves it out
            if torch.isfinite(value):
                self.log(f"val/{name}", value, sync_dist=False)
