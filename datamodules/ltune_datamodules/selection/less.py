"""LESS (Xia et al., ICML 2024, "LESS: Selecting Influential Data for Targeted Instruction Tuning", arXiv:2402.04333).

For every warmup checkpoint i (adapter, Adam moments m_i, v_i, mean learning rate η̄_i; see
:class:`ltune.callbacks.LESSWarmup`) and every row, the gradient g of the row's mean completion loss with
respect to the LoRA parameters (flattened in parameter-name order) gives::

    pool rows (Adam):   m' = β1 m_i + (1-β1) g,  v' = β2 v_i + (1-β2) g²,  Γ = m' / sqrt(v' + ε)   (no bias correction)
    validation (SGD):   Γ = g
    feature:            φ = normalize(R Γ),   R a seeded d x D Rademacher matrix (d = 8192), shared everywhere
                        (or a count sketch: ``projection="count_sketch"``, O(D) a row for CPUs and large D)
    influence:          S = Σ_i w_i φ_train,i · φ_val,iᵀ,   w_i = η̄_i / Σ_j η̄_j
    score(row):         max over subtasks of the mean of S over that subtask's validation rows

and the top ``budget`` rows are kept. Per-example gradients are exact and batched: every LoRA factor is an
``nn.Linear``; one forward + backward of Σ_b loss_b over a batch gives, per layer, the inputs x_b and output gradients
δ_b, and each row's weight gradient is δ_bᵀ x_b (one einsum), instead of one backward per row. R is generated in
blocks from (seed, block index), so train and validation features, checkpoints and ranks share it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from ltune.backbone import Backbone, LoRA
from ltune.datamodules.base import LTuneData
from ltune.datamodules.batching import pad_right
from ltune.datamodules.selection.base import Selection, pair_text
from ltune.datamodules.selection.cache import fingerprint
from ltune.datamodules.selection.scoring import SKIPPED, ScoringError, render_each
from ltune.datamodules.sources import SourceLike, as_source
from ltune.forward import completion_logprobs
from ltune.kernels import IGNORE_INDEX


def per_example_grads(model: nn.Module, batch: dict[str, Tensor], names: list[str]) -> Tensor:
    """``[B, D]`` gradients of each row's mean completion NLL w.r.t. the parameters ``names`` (weights of
    ``nn.Linear`` modules), concatenated in that order, from one forward and one backward."""
    modules = dict(model.named_modules())
    owners = [modules[n.rsplit(".", 1)[0]] for n in names]
    if not all(isinstance(m, nn.Linear) and n.endswith(".weight") for m, n in zip(owners, names)):
        raise ValueError("per-example gradients need every trainable parameter to be an nn.Linear weight (LoRA)")
    saved: dict[int, list] = {}

    def hook(mod, inputs, output):
        slot = saved.setdefault(id(mod), [inputs[0].detach(), None])
        output.register_hook(lambda g: slot.__setitem__(1, g.detach()))

    handles = [m.register_forward_hook(hook) for m in owners]
    try:
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        lp = completion_logprobs(model, ids, mask, labels).logprobs
        n = (labels[:, 1:] != IGNORE_INDEX).sum(1).clamp_min(1)
        (-(lp.sum(1) / n)).sum().backward()
    finally:
        for h in handles:
            h.remove()
    model.zero_grad(set_to_none=True)
    grads = []
    for m in owners:
        x, g = saved[id(m)]
        grads.append(torch.einsum("bto,bti->boi", g.float(), x.float()).flatten(1))
    return torch.cat(grads, 1)


class RademacherProjector:
    """``x -> x R / sqrt(d)`` with ``R`` a ±1 matrix ``[D, d]`` generated in row blocks from ``(seed, block)``.

    Args:
        dim: Output dimension d.
        seed: Seed shared by every checkpoint, rank, and the train and validation sides.
        block: Rows of R generated at a time.
    """

    def __init__(self, dim: int = 8192, seed: int = 0, block: int = 4096) -> None:
        self.dim, self.seed, self.block = dim, seed, block
        self._cache: dict[tuple[int, torch.device], Tensor] = {}

    def matrix_block(self, start: int, rows: int, device: torch.device) -> Tensor:
        key = (start, device)
        if key not in self._cache:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + start // self.block)
            r = torch.randint(0, 2, (rows, self.dim), generator=gen, dtype=torch.int8).float().mul_(2).sub_(1)
            self._cache[key] = r.to(device)
        return self._cache[key]

    def __call__(self, x: Tensor) -> Tensor:
        out = torch.zeros(x.shape[0], self.dim, device=x.device)
        for s in range(0, x.shape[1], self.block):
            blk = x[:, s : s + self.block].float()
            out += blk @ self.matrix_block(s, blk.shape[1], x.device)
        return out / self.dim**0.5


class CountSketchProjector:
    """``x -> S x`` with ``S`` a count sketch ``[d, D]``: coordinate j goes to bucket ``h(j)`` with sign ``s(j)``,
    both drawn from ``seed`` (Charikar et al., 2002; unbiased inner products, like a dense Rademacher projection,
    at ``O(D)`` per row instead of ``O(D d)``, with no matrix to store): for gradients of millions of coordinates on a
    CPU, where the dense projection costs tens of GFLOP a row.

    Args:
        dim: Output dimension d.
        seed: Seed shared by every checkpoint, rank, and the train and validation sides.
    """

    def __init__(self, dim: int = 8192, seed: int = 0) -> None:
        self.dim, self.seed = dim, seed
        self._cache: dict[tuple[int, torch.device], tuple[Tensor, Tensor]] = {}

    def hash(self, n: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Buckets ``[n]`` (int64) and signs ``[n]`` (float32) of the first ``n`` coordinates."""
        if (n, device) not in self._cache:
            gen = torch.Generator().manual_seed(self.seed)
            bucket = torch.randint(0, self.dim, (n,), generator=gen)
            sign = torch.randint(0, 2, (n,), generator=gen, dtype=torch.int8).float().mul_(2).sub_(1)
            self._cache[(n, device)] = bucket.to(device), sign.to(device)
        return self._cache[(n, device)]

    def __call__(self, x: Tensor) -> Tensor:
        bucket, sign = self.hash(x.shape[1], x.device)
        return torch.zeros(x.shape[0], self.dim, device=x.device).index_add_(1, bucket, x.float() * sign)


PROJECTORS = {"rademacher": RademacherProjector, "count_sketch": CountSketchProjector}


def influence(train: list[np.ndarray], val: list[np.ndarray], lrs: np.ndarray, subtask: np.ndarray) -> np.ndarray:
    """``[N]`` LESS scores: S = Σ_i (η̄_i / Σ η̄) train_i · val_iᵀ, then max over subtasks of the mean within each.

    Args:
        train: Per checkpoint, ``[N, d]`` normalised pool features.
        val: Per checkpoint, ``[M, d]`` normalised validation features.
        lrs: ``[C]`` mean learning rate of each checkpoint's epoch.
        subtask: ``[M]`` subtask index of each validation row.
    """
    w = np.asarray(lrs, dtype=np.float64) / np.sum(lrs)
    s = sum(wi * (t.astype(np.float64) @ v.astype(np.float64).T) for wi, t, v in zip(w, train, val))
    return np.stack([s[:, subtask == k].mean(1) for k in np.unique(subtask)], 1).max(1)


class LESS(Selection):
    """LESS: LoRA-gradient similarity between pool rows (Adam-preconditioned) and a target validation set (SGD).

    Args:
        pool: The candidate pool DataModule.
        target: Validation rows of the target task, in the pool's format, with a ``subtask_field`` column.
        checkpoints: Folder of ``epoch_*.pt`` files written by ``ltune.callbacks.LESSWarmup``.
        budget: Rows to keep (LESS: 5% of the pool): an int is a count, a float in (0, 1] a fraction.
        scorer: The warmup model with its LoRA settings; ``None``: the trained objective's backbone.
        subtask_field: Field of the target rows naming their subtask (mean within, max across subtasks).
        projection_dim: d of the random projection (8192).
        projection_seed: Seed of the projection.
        projection: ``"rademacher"`` (the paper's dense ±1 projection, via TRAK) or ``"count_sketch"`` (a sparse
            sketch with the same unbiased inner products at O(D) a row: for CPUs and large LoRA gradients, where the
            dense one costs 2 D d FLOPs a row, 80 GFLOP at D = 4.9M).
        beta1: Adam β1 of the preconditioning (0.9).
        beta2: Adam β2 (0.999).
        eps: Adam ε, inside the square root as in LESS (1e-8).
        **kwargs: :class:`Selection`'s ``cache_dir``, ``report_dir``, ``score_batch_size``, ``score_chunk``,
            ``progress``.
    """

    def __init__(
        self,
        pool: LTuneData,
        target: SourceLike,
        checkpoints: str,
        budget: int | float = 0.05,
        scorer: Backbone | None = None,
        subtask_field: str = "category",
        projection_dim: int = 8192,
        projection_seed: int = 0,
        projection: Literal["rademacher", "count_sketch"] = "rademacher",
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        **kwargs,
    ) -> None:
        super().__init__(pool, budget, **kwargs)
        self.target, self.checkpoints, self.scorer, self.subtask_field = target, checkpoints, scorer, subtask_field
        if projection not in PROJECTORS:
            raise ValueError(f"projection must be one of {sorted(PROJECTORS)}, got {projection!r}")
        self.projection_dim, self.projection_seed, self.projection = projection_dim, projection_seed, projection
        self.adam = (beta1, beta2, eps)

    def checkpoint_files(self) -> list[Path]:
        files = sorted(Path(self.checkpoints).glob("epoch_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
        if not files:
            raise FileNotFoundError(f"no LESS warmup checkpoints (epoch_*.pt) in {self.checkpoints}")
        return files

    def scorer_backbone(self) -> Backbone:
        bb = self.scoring_backbone(self.scorer, keep_lora=True)
        if bb.lora is None:
            raise RuntimeError("LESS needs a backbone with LoRA settings (the warmup run's): set `scorer` or use LoRA")
        no_dropout = (
            {"dropout": 0.0} if isinstance(bb.lora, LoRA) else {"lora_dropout": 0.0}
        )  # the short form or peft's
        return dataclasses.replace(bb, lora=dataclasses.replace(bb.lora, **no_dropout))

    def scorer_config(self) -> dict[str, Any]:
        stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in self.checkpoint_files()]
        target = [as_source(self.target).name, fingerprint(self.target_rows())]  # its rows, not only its name
        return {
            **super().scorer_config(),
            "scorer": dataclasses.asdict(self.scorer_backbone()),
            "checkpoints": stats,
            "target": target,
            "subtask": self.subtask_field,
            "d": self.projection_dim,
            "seed": self.projection_seed,
            "adam": self.adam,
            "max_length": self.pool.max_length,
            **({"projection": self.projection} if self.projection != "rademacher" else {}),
        }
        # (the default projection adds no key, so score caches written before the option existed stay valid)

    def _encode(self, rows: list[dict], names: list[str], tok) -> tuple[list[dict | None], np.ndarray]:
        fmt = self.renderer(tok)
        return render_each(rows, names, lambda row: fmt.encode_pair(*pair_text(row)), "LESS")

    def features(self, model, enc: list[dict], names: list[str], ckpt: dict | None, desc: str) -> np.ndarray:
        """``[N, d]`` normalised projected gradient features (Adam-preconditioned when ``ckpt`` moments are given)."""
        device, tok = self.device(), self.scorer_backbone().tokenizer
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        proj = PROJECTORS[self.projection](self.projection_dim, self.projection_seed)
        b1, b2, eps = self.adam
        if ckpt is not None:
            m = torch.cat([ckpt["exp_avg"][n].flatten() for n in trainable]).to(device)
            v = torch.cat([ckpt["exp_avg_sq"][n].flatten() for n in trainable]).to(device)

        def fn(batch):
            ids, mask = pad_right([enc[j]["input_ids"] for j in batch], tok.pad_token_id)
            labels = pad_right([enc[j]["labels"] for j in batch], IGNORE_INDEX)[0]
            g = per_example_grads(
                model,
                {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)},
                trainable,
            )
            if ckpt is not None:
                g = (b1 * m + (1 - b1) * g) / torch.sqrt(b2 * v + (1 - b2) * g * g + eps)
            return {"f": torch.nn.functional.normalize(proj(g), dim=1).cpu().numpy()}

        return self.batched(len(enc), [len(e["input_ids"]) for e in enc], fn, names, desc)["f"]

    def target_rows(self) -> list[dict]:
        """The target validation rows, validated like the pool's (with the subtask field)."""
        pool = self.pool
        return pool.load_rows(self.target, pool.fields, {**pool.optional, self.subtask_field: str}, pool.check)

    def score(self, rows: list[dict], names: list[str]) -> dict[str, np.ndarray]:
        bb = self.scorer_backbone()
        tok = bb.tokenizer
        val = self.target_rows()
        subtasks = sorted({r.get(self.subtask_field, "all") for r in val})
        sub_idx = np.array([subtasks.index(r.get(self.subtask_field, "all")) for r in val])
        enc, skipped = self._encode(rows, names, tok)
        venc, vskipped = self._encode(val, [f"target row {i + 1}" for i in range(len(val))], tok)
        if vskipped.any():
            raise ScoringError(f"target row {int(np.flatnonzero(vskipped)[0]) + 1}: longer than max_length")
        kept = np.flatnonzero(~skipped)
        files = self.checkpoint_files()
        ckpts = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
        lrs = np.array([c["lr"] for c in ckpts])
        tfs, vfs = [], []
        model = bb.load_model().to(self.device()).eval()
        params = dict(model.named_parameters())
        for f, c in zip(files, ckpts):
            with torch.no_grad():
                for n, t in c["params"].items():
                    params[n].copy_(t)
            knames = [names[i] for i in kept]
            tfs.append(self.features(model, [enc[i] for i in kept], knames, c, f"LESS pool grads {f.stem}"))
            vnames = [f"target row {i + 1}" for i in range(len(val))]
            vfs.append(self.features(model, venc, vnames, None, f"LESS val grads {f.stem}"))
        out = np.full(len(rows), np.nan)
        out[kept] = influence(tfs, vfs, lrs, sub_idx)
        return {"influence": out, SKIPPED: skipped}

    def choose(self, scores: dict[str, np.ndarray], k: int) -> np.ndarray:
        ok = np.flatnonzero(~scores[SKIPPED])
        return ok[np.argsort(-scores["influence"][ok], kind="stable")][:k]
