"""RLSC: sample N completions per prompt and sharpen the model onto its own mode; no labels, no reward model.

ltune fit --config configs/objectives/rlsc.yaml
"""

from __future__ import annotations

import torch
from torch import Tensor

from ltune.generation import HFSampler, Sampler, decode, sample_groups, training_inputs
from ltune.losses.rlsc import rlsc_loss
from ltune.objectives.base import Objective
from ltune.packing import consecutive_groups, grouped_logprobs
from ltune.rewards import answer_groups, is_equivalent, majority_vote


class RLSC(Objective):
    """Reinforcement Learning via Self-Confidence (Li et al., 2025, arXiv:2506.06395).

    Batch semantics: ``data.batch_size`` prompts per step x ``num_samples`` completions each, sampled at
    ``temperature`` from the current model (p_old = sg[p_theta]); the loss
    ``mean_i -(exp(sg[s_i]) + alpha) s_i`` uses the summed log-probs s_i of each completion under the same tempered
    distribution (``ltune.losses.rlsc``). Paper settings: 16 samples, temperature 0.5, alpha 0.1, 10-30 steps,
    AdamW lr 1e-5, constant lr. Logs ``train/``: ``loss``, ``seq_logprob`` (mean s_i), ``weight`` (mean exp(s_i)),
    ``entropy``, ``majority_agreement`` (share of samples whose answer equals their prompt's majority answer),
    ``completions/mean_length``, ``alpha``; a reference ``answer`` in the rows adds ``ground_truth_ratio``.

    Args:
        num_samples: Completions sampled per prompt (paper: 16).
        max_completion_length: Token budget of each sampled completion.
        temperature: Sampling temperature, also the temperature of the scored log-probs (paper: 0.5).
        top_p: Nucleus sampling mass (1.0 keeps p_old exactly the tempered model).
        alpha: Smoothing constant of the loss (paper: 0.1).
        length_normalized_weight: Weight by exp(s_i / |y_i|) instead of exp(s_i) (not in the paper).
        generation_batch_size: Completions per ``generate`` call (a multiple of ``num_samples``); None = all.
        placebo: A matched control: each completion is weighted by the confidence of another completion of its
            prompt (a random permutation within every group), so the steps, samples and weights are RLSC's but the
            weight no longer says which answer the model is sure of.
        share_prompt: Score each prompt's samples as one sequence around the prompt they share (exact, fewer tokens
            through the decoder: :mod:`ltune.packing`); False scores the rows as they are.
        **kwargs: Arguments of :class:`~ltune.objectives.base.Objective` (backbone, optimizer, scheduler, ...).
    """

    def __init__(
        self,
        num_samples: int = 16,
        max_completion_length: int = 32,
        temperature: float = 0.5,
        top_p: float = 1.0,
        alpha: float = 0.1,
        length_normalized_weight: bool = False,
        generation_batch_size: int | None = None,
        placebo: bool = False,
        share_prompt: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature={temperature}: RLSC samples, it needs a temperature > 0")
        self.num_samples, self.max_completion_length = num_samples, max_completion_length
        self.temperature, self.top_p, self.alpha = temperature, top_p, alpha
        self.length_normalized_weight, self.generation_batch_size = length_normalized_weight, generation_batch_size
        self.placebo, self.share_prompt = placebo, share_prompt
        self.sampler: Sampler = HFSampler()

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        tok, n = self.tokenizer, self.num_samples
        samples = sample_groups(
            self.sampler,
            self.model,
            batch["prompt_ids"],
            batch["prompt_mask"],
            num_samples=n,
            generation_batch_size=self.generation_batch_size,
            max_new_tokens=self.max_completion_length,
            temperature=self.temperature,
            top_p=self.top_p,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        width, mask = samples.prompt_ids.shape[1], samples.completion_mask
        inputs = training_inputs(samples)
        groups = consecutive_groups(len(mask), n, mask.device) if self.share_prompt else None
        lp = grouped_logprobs(self.model, **inputs, groups=groups, temperature=self.temperature, with_entropy=True)
        logprobs, entropy = lp.logprobs[:, width - 1 :], lp.entropy[:, width - 1 :]
        order = None
        if self.placebo:  # a permutation within each prompt's group of n
            groups = logprobs.shape[0] // n
            order = (torch.argsort(torch.rand(groups, n), 1) + n * torch.arange(groups)[:, None]).reshape(-1)
            order = order.to(logprobs.device)
        loss, metrics = rlsc_loss(logprobs, mask, self.alpha, self.length_normalized_weight, order)
        self.check_finite(loss, batch_idx)
        metrics["entropy"] = (entropy * mask).sum() / mask.sum().clamp_min(1)
        metrics["completions/mean_length"] = mask.sum(1).float().mean()
        metrics.update(self.agreement(decode(tok, samples), batch))
        bs = len(batch["prompt_ids"])
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log_dict(
            {f"train/{k}": torch.as_tensor(v, dtype=torch.float32) for k, v in metrics.items()}, batch_size=bs
        )
        return loss

    def agreement(self, texts: list[str], batch: dict) -> dict[str, float]:
        """Share of samples agreeing with their prompt's majority answer (and, given answers, the correct share)."""
        n, agree, correct = self.num_samples, [], []
        for group, truth in answer_groups(texts, n, batch.get("answer") or [None] * len(batch["prompt_ids"])):
            label, _ = majority_vote(group)
            agree.append(sum(is_equivalent(a, label) for a in group) / n)
            if truth is not None:
                correct.append(sum(is_equivalent(a, truth) for a in group) / n)
        out = {"majority_agreement": sum(agree) / len(agree)}
        if correct:
            out["ground_truth_ratio"] = sum(correct) / len(correct)
        return out

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.eval_step(batch)
