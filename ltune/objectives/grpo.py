"""GRPO: sample G completions per prompt inside ``training_step``, reward them, and take a clipped policy-gradient
step on group-normalised advantages. TTRL and RLAIF are this objective with another reward.

ltune fit --config configs/objectives/ttrl.yaml
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ltune.generation import HFSampler, Sampler, decode, sample_groups, select, terminated, training_inputs
from ltune.losses.grpo import (
    ImportanceLevel,
    LossType,
    RewardScale,
    group_advantages,
    grpo_loss,
    rloo_advantages,
)
from ltune.objectives.base import Objective
from ltune.objectives.rng_stream import OwnRNG
from ltune.packing import consecutive_groups, grouped_logprobs
from ltune.reward_funcs import RewardError, RewardFunc, accuracy_reward, score_rollouts


class GRPO(OwnRNG, Objective):
    """Group Relative Policy Optimization (Shao et al., 2024, arXiv:2402.03300) on reward functions.

    Batch semantics: a training batch holds ``B`` prompts (``data.batch_size``, a ``PromptData``); each step samples
    ``num_generations`` completions per prompt (``B x num_generations`` completions), in chunks of
    ``generation_batch_size`` completions, then takes one optimizer step on all of them (on-policy, pi_old =
    sg[pi_theta]). Defaults are TRL's ``GRPOConfig`` (``loss_type="dapo"``, ``beta=0``, ``epsilon=0.2``,
    ``scale_rewards="group"``, ``temperature=1``). Logs under TRL's names with a ``train/`` prefix: ``reward``,
    ``reward_std``, ``frac_reward_zero_std``, ``completions/{mean,min,max}_length``, ``completions/clipped_ratio``
    (share cut by ``max_completion_length``), ``entropy``, ``kl`` (``beta > 0``), ``clip_ratio/*``, ``loss``.

    Rewards are ``reward_funcs`` called as TRL calls them (:mod:`ltune.reward_funcs`: prompts, completions, completion
    ids and the rows' other columns), summed with ``reward_weights`` (None counts as 0; a completion no function
    scores is left out of its group's baseline and gets no advantage); each is logged as ``rewards/<name>/mean`` and
    ``/std``. The default is the verifier, ``accuracy_reward`` (1 when the extracted answer is equivalent to the
    row's ``answer``). ``self.sampler`` may be replaced by any ``ltune.generation.Sampler`` (e.g. a vLLM engine).

    With ``beta > 0`` the reference is the policy with its LoRA adapter disabled, or a frozen copy without LoRA.

    Off-policy steps and variants: with ``num_iterations`` mu > 1 (TRL's name, the GRPO paper's mu) each generation
    serves mu optimizer steps; the first keeps its log-probs as pi_old (same weights, same tokens: no extra forward),
    the next mu - 1 are off-policy, so the ratios move and clip. The loader's batches of those mu - 1 steps are not
    sampled (TRL repeats the generation batch instead): ``max_steps`` steps sample ``max_steps / mu`` batches (no
    gradient accumulation with mu > 1: it would split a generation's steps). GSPO is
    ``importance_sampling_level="sequence"`` with ``loss_type="grpo"``; CISPO is ``loss_type="cispo"`` with
    ``epsilon_high`` the cap of the weight (e.g. 5.0); RLOO's leave-one-out advantages are
    ``advantage_estimator="rloo"``. TTRL and RLAIF take the same arguments.

    Training steps draw their random numbers (sampling, dropout) from the objective's own RNG stream (:meth:`own_rng`),
    saved in checkpoints for every rank: a run resumed from a checkpoint samples as the uninterrupted run did.

    Args:
        reward_funcs: Reward functions: import paths of functions (``my_rewards.brevity``) or ``class_path`` /
            ``init_args`` of callables (``ltune.reward_funcs.SoftOverlongPunishment``); None: the objective's default.
        reward_weights: One weight per reward function (TRL's ``reward_weights``); None: all 1.
        num_generations: Completions per prompt used in the update (G >= 2; TRL default 8).
        max_completion_length: Token budget of each sampled completion (also L_max of ``dr_grpo``).
        temperature: Sampling temperature; log-probs are those of the tempered distribution.
        top_p: Nucleus sampling mass.
        generation_batch_size: Completions per ``generate`` call (a multiple of the completions per prompt); None
            generates the whole batch at once.
        loss_type: Aggregation: ``grpo``, ``bnpo``, ``dapo`` (default) or ``dr_grpo``.
        scale_rewards: Advantage scaling: ``group`` (default), ``batch`` or ``none`` (Dr. GRPO). ``batch`` takes the
            standard deviation over this process's batch (per rank under DDP, per micro-batch under accumulation:
            two ranks train as one process accumulating two micro-batches; TRL's spans every process's generation
            batch); ``loss_type: dapo`` divides by the tokens of the step's batch on every rank (global under DDP,
            as TRL; under accumulation each micro-batch's own, where TRL counts the accumulated ones too).
        beta: Coefficient of the k3 KL to the reference (default 0: no reference forward).
        epsilon: Lower clip range of the ratio.
        epsilon_high: Upper clip range (None = ``epsilon``; DAPO uses 0.28); CISPO's cap of the weight.
        importance_sampling_level: ``token`` (GRPO) or ``sequence`` (GSPO: one ratio per completion).
        num_iterations: Optimizer steps per generation (mu; 1 = on-policy).
        advantage_estimator: ``grpo`` (group-normalised, ``scale_rewards``) or ``rloo`` (leave-one-out baseline).
        normalize_advantages: With ``rloo``, standardise the advantages over the batch (TRL's RLOO option; this
            process's batch, per rank).
        share_prompt: Score each prompt's completions as one sequence around the prompt they share (exact, fewer
            tokens through the decoder: :mod:`ltune.packing`); False scores the ``B x G`` rows as they are.
        sampler: What samples the completions, any :class:`ltune.generation.Sampler`: None is
            :class:`~ltune.generation.HFSampler` (``generate``, each prompt prefilled once);
            :class:`ltune.continuous.ContinuousSampler` is ``transformers``' continuous batching (finished completions
            leave the batch; TRL's ``use_transformers_continuous_batching``).
        **kwargs: Arguments of :class:`~ltune.objectives.base.Objective` (backbone, optimizer, scheduler, ...).
    """

    def __init__(
        self,
        reward_funcs: list[RewardFunc] | None = None,
        reward_weights: list[float] | None = None,
        num_generations: int = 8,
        max_completion_length: int = 32,
        temperature: float = 1.0,
        top_p: float = 1.0,
        generation_batch_size: int | None = None,
        loss_type: LossType = "dapo",
        scale_rewards: RewardScale = "group",
        beta: float = 0.0,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        importance_sampling_level: ImportanceLevel = "token",
        num_iterations: int = 1,
        advantage_estimator: Literal["grpo", "rloo"] = "grpo",
        normalize_advantages: bool = False,
        share_prompt: bool = True,
        sampler: Sampler | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if num_generations < 2:
            raise ValueError(f"num_generations={num_generations}: GRPO needs at least 2 completions per prompt")
        if temperature <= 0:
            raise ValueError(f"temperature={temperature}: sampling needs a temperature > 0")
        self.num_generations, self.max_completion_length = num_generations, max_completion_length
        self.temperature, self.top_p, self.generation_batch_size = temperature, top_p, generation_batch_size
        self.loss_type, self.scale_rewards = loss_type, scale_rewards
        self.beta, self.epsilon, self.epsilon_high = beta, epsilon, epsilon_high
        if loss_type == "cispo" and epsilon_high is None:
            raise ValueError("loss_type='cispo' needs epsilon_high: the cap of the importance weight (5.0 in ScaleRL)")
        if num_iterations < 1 or advantage_estimator not in ("grpo", "rloo"):
            raise ValueError(f"num_iterations={num_iterations} must be >= 1 and advantage_estimator 'grpo' or 'rloo'")
        self.importance_sampling_level, self.num_iterations = importance_sampling_level, num_iterations
        self.advantage_estimator, self.normalize_advantages = advantage_estimator, normalize_advantages
        self.share_prompt = share_prompt
        if reward_funcs is not None and reward_weights is not None and len(reward_weights) != len(reward_funcs):
            raise ValueError(
                f"{len(reward_weights)} reward_weights for {len(reward_funcs)} reward_funcs: give one each"
            )
        self.reward_weights, self._given_rewards = reward_weights, reward_funcs
        self.reward_funcs: list[RewardFunc] = []  # set in configure_model: the given ones, or default_rewards()
        self._rollout: list | None = None  # [samples, advantages, metrics, old log-probs] reused over num_iterations
        self._updates = 0
        self.sampler: Sampler = sampler or HFSampler()
        self.last_rollouts: dict | None = None  # the latest step's scored completions (SampleTable logs them)

    @property
    def num_rollouts(self) -> int:
        """Completions sampled per prompt; the first ``num_generations`` of each group enter the update."""
        return self.num_generations

    def needs_reference_copy(self) -> bool:
        return self.beta > 0

    def configure_model(self) -> None:
        super().configure_model()
        if not self.reward_funcs:
            self.reward_funcs = list(self._given_rewards or self.default_rewards())
            if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
                raise RewardError(f"{len(self.reward_weights)} reward_weights for {len(self.reward_funcs)} rewards")
            for f in self.reward_funcs:
                if hasattr(f, "bind"):
                    f.bind(self)  # a reward that holds a model or a judge: it sees the run's policy and device

    def default_rewards(self) -> list[RewardFunc]:
        """The rewards when ``reward_funcs`` is not given: the verifier against each row's ``answer``."""
        return [accuracy_reward]

    def on_fit_start(self) -> None:
        if self.num_iterations > 1 and self.trainer.accumulate_grad_batches > 1:
            raise ValueError(
                f"num_iterations={self.num_iterations} reuses a generation over optimizer steps, which gradient "
                f"accumulation ({self.trainer.accumulate_grad_batches} batches) would split: use one or the other"
            )

    # ---- rollout and reward ---------------------------------------------------------------------------------------
    def rollout(self, batch: dict):
        tok = self.tokenizer
        return sample_groups(
            self.sampler,
            self.model,
            batch["prompt_ids"],
            batch["prompt_mask"],
            num_samples=self.num_rollouts,
            generation_batch_size=self.generation_batch_size,
            max_new_tokens=self.max_completion_length,
            temperature=self.temperature,
            top_p=self.top_p,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )

    def rewards(self, texts: list[str], batch: dict, samples=None) -> tuple[Tensor, dict[str, float]]:
        """Rewards ``[B * num_rollouts]`` (prompt-major) of the decoded completions (``samples``: their token ids)
        from ``reward_funcs``, and metrics to log (each function's, and what they report with ``log_metric``)."""
        return score_rollouts(self.reward_funcs, self.reward_weights, batch, texts, samples, self.num_rollouts)

    # ---- the step -------------------------------------------------------------------------------------------------
    def groups(self, inputs: dict) -> Tensor | None:
        """The update's rows grouped by prompt for the shared-prefix forward (None: ``share_prompt`` off)."""
        ids = inputs["input_ids"]
        return consecutive_groups(len(ids), self.num_generations, ids.device) if self.share_prompt else None

    def policy_logprobs(self, inputs: dict, width: int, with_entropy: bool = False):
        lp = grouped_logprobs(
            self.model, **inputs, groups=self.groups(inputs), temperature=self.temperature, with_entropy=with_entropy
        )
        entropy = lp.entropy[:, width - 1 :] if with_entropy else None
        return lp.logprobs[:, width - 1 :], entropy

    def reference_logprobs(self, inputs: dict, width: int) -> Tensor:
        with self.reference() as ref:
            lp = grouped_logprobs(ref, **inputs, groups=self.groups(inputs), temperature=self.temperature)
            return lp.logprobs[:, width - 1 :]

    def generate_and_score(self, batch: dict) -> list:
        """Sample, reward and compute advantages: ``[samples, advantages, metrics, None]`` (pi_old to come)."""
        samples = self.rollout(batch)
        texts = decode(self.tokenizer, samples)
        rewards, extra = self.rewards(texts, batch, samples)
        rewards = rewards.to(self.device)
        n, g = self.num_rollouts, self.num_generations
        if n > g:  # vote-then-sample: keep the first G of every group of N
            keep = (torch.arange(len(rewards), device=self.device).view(-1, n)[:, :g]).reshape(-1)
            samples, rewards, texts = select(samples, keep), rewards[keep], [texts[i] for i in keep.tolist()]
        if self.advantage_estimator == "rloo":
            advantages, metrics = rloo_advantages(rewards, g, self.normalize_advantages)
        else:
            advantages, metrics = group_advantages(rewards, g, self.scale_rewards)
        lengths = samples.completion_mask.sum(1).float()
        metrics["completions/mean_length"] = lengths.mean()
        metrics["completions/min_length"] = lengths.min()
        metrics["completions/max_length"] = lengths.max()
        metrics["completions/clipped_ratio"] = 1 - terminated(samples, self.tokenizer.eos_token_id).float().mean()
        metrics.update({k: torch.tensor(float(v)) for k, v in extra.items()})
        self.last_rollouts = {"samples": samples, "completions": texts, "rewards": rewards, "advantages": advantages}
        return [samples, advantages, metrics, None]

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        with self.own_rng():
            if self._rollout is None or self._updates % self.num_iterations == 0:
                self._rollout = self.generate_and_score(batch)
            samples, advantages, metrics, old = self._rollout
            loss, loss_metrics = self.update_loss(samples, advantages, old)
            self._updates += 1
            self.check_finite(loss, batch_idx)
            metrics = {**metrics, **loss_metrics}
            bs = len(batch["prompt_ids"])
            self.log("train/loss", loss, prog_bar=True, batch_size=bs)
            self.log_dict({f"train/{k}": v for k, v in metrics.items()}, batch_size=bs)
            return loss

    def update_loss(
        self, samples, advantages: Tensor, old_logprobs: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of one optimizer step on a generation; ``old_logprobs`` None means on-policy (the first step of a
        generation, whose log-probs are then kept as pi_old for the next ``num_iterations - 1``)."""
        inputs, width = training_inputs(samples), samples.prompt_ids.shape[1]
        logprobs, entropy = self.policy_logprobs(inputs, width, with_entropy=True)
        if old_logprobs is None and self.num_iterations > 1 and self._rollout is not None:
            self._rollout[3] = logprobs.detach()
        mask = samples.completion_mask
        ref = self.reference_logprobs(inputs, width) if self.beta > 0 else None
        tokens = mask.sum().float()
        num_items = None
        if self.loss_type in ("dapo", "cispo"):  # token count of the global batch, per process (gradients are averaged)
            num_items = self.trainer.strategy.reduce(tokens, reduce_op="mean")
        loss, metrics = grpo_loss(
            logprobs,
            advantages,
            mask,
            old_logprobs=old_logprobs,
            ref_logprobs=ref,
            beta=self.beta,
            epsilon_low=self.epsilon,
            epsilon_high=self.epsilon_high,
            loss_type=self.loss_type,
            max_completion_length=self.max_completion_length,
            num_items_in_batch=num_items,
            importance_sampling_level=self.importance_sampling_level,
        )
        metrics["entropy"] = (entropy * mask).sum() / tokens.clamp_min(1)
        metrics["num_tokens"] = tokens
        return loss, metrics

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.eval_step(batch)
