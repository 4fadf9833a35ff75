"""GRPO / TTRL objectives on a micro Llama: rollout plumbing, the update's direction, label-free TTRL rewards."""

import pytest
import torch

from ltune.backbone import LoRA
from ltune.datamodules import EmbeddedTasks, PromptData
from ltune.forward import completion_logprobs
from ltune.generation import HFSampler, sample_groups, training_inputs
from ltune.objectives import GRPO, TTRL
from ltune.reward_funcs import MajorityVote, majority_rewards
from tests.conftest import micro_backbone, quiet_trainer


def _data(n=8, batch_size=2, tokenizer=None):
    dm = PromptData(train=EmbeddedTasks(format="prompts", n=n, categories=["add"]), batch_size=batch_size)
    dm.tokenizer = tokenizer
    return dm


def _prompt_batch(backbone, n=3):
    dm = _data(n=n, tokenizer=backbone.tokenizer)
    dm.setup()
    return dm.collate(dm.data["train"])


def test_sampler_logprobs_equal_the_scoring_forward_and_groups_are_prompt_major():
    bb = micro_backbone()
    model, tok = bb.load_model(), bb.tokenizer
    batch = _prompt_batch(bb)
    samples = sample_groups(
        HFSampler(with_logprobs=True),
        model,
        batch["prompt_ids"],
        batch["prompt_mask"],
        num_samples=4,
        generation_batch_size=8,
        max_new_tokens=10,
        temperature=0.7,
        top_p=1.0,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )  # 3 prompts in chunks of 2 prompts: the chunks' completions are padded to one width
    assert samples.completion_ids.shape[0] == 12
    assert torch.equal(samples.prompt_ids, batch["prompt_ids"].repeat_interleave(4, 0))
    width = samples.prompt_ids.shape[1]
    lp = completion_logprobs(model, **training_inputs(samples), temperature=0.7).logprobs[:, width - 1 :]
    mask = samples.completion_mask.bool()
    torch.testing.assert_close(lp[mask], samples.logprobs[mask], atol=2e-4, rtol=1e-4)
    assert (lp[~mask] == 0).all()


def test_generation_batch_size_must_be_a_multiple_of_the_group():
    bb = micro_backbone()
    batch = _prompt_batch(bb)
    with pytest.raises(ValueError, match="generation_batch_size=6 .* num_samples=4"):
        sample_groups(
            HFSampler(),
            bb.load_model(),
            batch["prompt_ids"],
            batch["prompt_mask"],
            num_samples=4,
            generation_batch_size=6,
            pad_token_id=0,
            eos_token_id=1,
            max_new_tokens=2,
            temperature=1.0,
        )


class _Recorder(GRPO):
    """Rewards completions by an arbitrary function of their text (varies between samples); records the update."""

    def rewards(self, texts, batch, samples=None):
        return torch.tensor([float(sum(map(ord, t)) % 7) for t in texts]), {}

    def update_loss(self, samples, advantages, old_logprobs=None):
        self.record = (samples, advantages)
        return super().update_loss(samples, advantages, old_logprobs)


def _seq_logprob(model, samples):
    width = samples.prompt_ids.shape[1]
    with torch.no_grad():
        lp = completion_logprobs(model, **training_inputs(samples)).logprobs[:, width - 1 :]
    return lp.sum(1)


def test_one_step_raises_the_likelihood_of_advantaged_completions():
    torch.manual_seed(1)
    model = _Recorder(
        backbone=micro_backbone(),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05),
        num_generations=8,
        max_completion_length=12,
        loss_type="bnpo",
    )
    quiet_trainer(limit_val_batches=0, max_steps=1).fit(model, _data(batch_size=2))
    samples, adv = model.record
    assert adv.abs().sum() > 0
    initial = micro_backbone().load_model()  # the same init seed rebuilds the starting weights
    gain = _seq_logprob(model.model, samples) - _seq_logprob(initial, samples)
    # first order: SGD on L = -sum_i A_i sum_t log p / tokens raises sum_i A_i * (change of log p(o_i))
    assert (adv * gain).sum() > 0
    for key in (
        "reward",
        "reward_std",
        "frac_reward_zero_std",
        "completions/mean_length",
        "completions/clipped_ratio",
        "entropy",
        "clip_ratio/region_mean",
        "num_tokens",
        "loss",
    ):
        assert f"train/{key}" in model.trainer.callback_metrics, key


@pytest.mark.parametrize("lora", [None, LoRA(r=4, alpha=8, dropout=0.0)])
def test_kl_reference_is_the_initial_model(lora):
    model = GRPO(backbone=micro_backbone(lora=lora), beta=0.1, num_generations=2)
    model.configure_model()
    assert bool(model._frozen_reference) == (lora is None)
    assert not any(k.startswith("_frozen") for k in model.state_dict())  # the copy is not saved or trained
    with torch.no_grad():
        for p in model.model.parameters():
            p.add_(0.01)  # the policy moves; the reference must not
    bb = model.backbone
    batch = _prompt_batch(bb, n=2)
    samples = sample_groups(
        HFSampler(),
        model.model,
        batch["prompt_ids"],
        batch["prompt_mask"],
        num_samples=2,
        max_new_tokens=6,
        temperature=1.0,
        eos_token_id=1,
        pad_token_id=0,
    )
    width = samples.prompt_ids.shape[1]
    ref = model.reference_logprobs(training_inputs(samples), width)
    initial = micro_backbone().load_model()
    expected = completion_logprobs(initial, **training_inputs(samples)).logprobs[:, width - 1 :]
    if lora is None:
        torch.testing.assert_close(ref, expected)
    else:  # LoRA disabled = the base weights, which moved here too (only the adapter trains in real runs)
        base = completion_logprobs(model.model.get_base_model(), **training_inputs(samples)).logprobs
        with model.model.disable_adapter():
            torch.testing.assert_close(
                ref, completion_logprobs(model.model, **training_inputs(samples)).logprobs[:, width - 1 :]
            )
        assert base.shape[0] == ref.shape[0]


def test_majority_rewards_by_hand():
    rewards, label, ratio = majority_rewards(["4", "4.0", "5", None])
    assert (rewards, label, ratio) == ([1.0, 1.0, 0.0, 0.0], "4", 0.5)


def _vote(reward: MajorityVote, texts: list[str], answers: list) -> tuple[list[float], dict[str, float]]:
    """The reward called as GRPO calls it: each row's answer repeated for its group of completions."""
    logged = {}
    n = len(texts) // len(answers)
    values = reward(completions=texts, group_size=n, answer=[a for a in answers for _ in range(n)],
                    log_metric=logged.__setitem__)  # fmt: skip
    return values, logged


def test_ttrl_rewards_ignore_the_reference_answer_and_metrics_by_hand():
    (reward,) = TTRL(backbone=micro_backbone(), num_votes=4, num_generations=2).default_rewards()
    assert isinstance(reward, MajorityVote) and reward.kept == 2 and not reward.placebo
    texts = ["The answer is 4.", "so 4.0", "maybe 5", "no idea"]
    labelled, m = _vote(reward, texts, ["5"])
    blind, m_blind = _vote(reward, texts, [None])
    assert labelled == blind == [1.0, 1.0, 0.0, 0.0]  # majority "4" rewarded, truth "5" unused
    # label "4" != "5"; pseudo [1,1,0,0] vs true [0,0,1,0] agree on 1 of 4; 1 of 4 correct; kept first 2: 0 correct
    assert m == {
        "majority_ratio": 0.5,
        "majority_voting_reward": 0.5,
        "label_accuracy": 0.0,
        "reward_accuracy": 0.25,
        "ground_truth_ratio": 0.25,
        "pass@4": 1.0,
        "post_ground_truth_ratio": 0.0,
    }
    assert m_blind == {"majority_ratio": 0.5, "majority_voting_reward": 0.5}


def test_ttrl_placebo_shuffles_the_pseudo_rewards_within_each_group():
    """The placebo gives each prompt's samples a permutation of TTRL's rewards: the same counts per group, detached
    from which sample agrees with the majority."""
    texts = ["4", "4", "4", "5", "7", "7", "8", "9"]  # prompt 0: majority 4 (3 of 4); prompt 1: majority 7
    true, _ = _vote(MajorityVote(), texts, [None, None])
    (placebo,) = TTRL(backbone=micro_backbone(), num_votes=4, num_generations=2, placebo=True).default_rewards()
    torch.manual_seed(0)
    draws = [torch.tensor(_vote(placebo, texts, [None, None])[0]) for _ in range(20)]
    assert true == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    for d in draws:
        assert d.view(2, 4).sum(1).tolist() == [3.0, 2.0]
    assert any(d.tolist() != true for d in draws)


def test_bad_group_settings_name_both_numbers():
    with pytest.raises(ValueError, match="num_votes=4 must be >= num_generations=8"):
        TTRL(num_votes=4, num_generations=8)
    with pytest.raises(ValueError, match="num_generations=1"):
        GRPO(num_generations=1)


class _OffPolicy(_Recorder):
    """Records every update's inputs and counts generations."""

    def generate_and_score(self, batch):
        self.generations = getattr(self, "generations", 0) + 1
        return super().generate_and_score(batch)

    def update_loss(self, samples, advantages, old_logprobs=None):
        self.updates = [*getattr(self, "updates", []), (samples, advantages, old_logprobs)]
        return GRPO.update_loss(self, samples, advantages, old_logprobs)


@pytest.mark.parametrize(
    "variant",
    [{}, {"importance_sampling_level": "sequence", "loss_type": "grpo"}, {"loss_type": "cispo", "epsilon_high": 5.0},
     {"advantage_estimator": "rloo"}],
    ids=["grpo", "gspo", "cispo", "rloo"],
)  # fmt: skip
def test_num_iterations_reuses_a_generation_with_the_first_steps_logprobs_as_pi_old(variant):
    """mu = 2 over 3 steps: generations at steps 0 and 2; step 1 reuses step 0's samples and advantages, its pi_old
    equals the log-probs of step 0's (initial) weights from an independent forward, and the policy has moved."""
    torch.manual_seed(0)
    model = _OffPolicy(backbone=micro_backbone(), optimizer=lambda p: torch.optim.SGD(p, lr=0.5), num_generations=4,
                       max_completion_length=6, num_iterations=2, **variant)  # fmt: skip
    quiet_trainer(limit_val_batches=0, max_steps=3).fit(model, _data(batch_size=2))
    assert model.generations == 2 and len(model.updates) == 3
    (s0, a0, old0), (s1, a1, old1), (s2, _, old2) = model.updates
    assert old0 is None and old2 is None and s1 is s0 and torch.equal(a1, a0) and s2 is not s0
    width = s0.prompt_ids.shape[1]
    initial = micro_backbone().load_model()
    with torch.no_grad():
        expect = completion_logprobs(initial, **training_inputs(s0)).logprobs[:, width - 1 :]
        now = completion_logprobs(model.model, **training_inputs(s0)).logprobs[:, width - 1 :]
    mask = s0.completion_mask.bool()
    torch.testing.assert_close(old1[mask], expect[mask], atol=1e-5, rtol=1e-5)
    assert (now - expect)[mask].abs().max() > 1e-3  # two SGD steps later the ratios are no longer 1


def test_rloo_advantages_and_cispo_need_their_settings():
    with pytest.raises(ValueError, match="cispo.*epsilon_high"):
        GRPO(backbone=micro_backbone(), loss_type="cispo")
    with pytest.raises(ValueError, match="num_iterations=0"):
        GRPO(backbone=micro_backbone(), num_iterations=0)


def test_num_iterations_refuses_gradient_accumulation():
    model = GRPO(backbone=micro_backbone(), num_generations=2, max_completion_length=4, num_iterations=2)
    with pytest.raises(ValueError, match="num_iterations=2 .* accumulation"):
        quiet_trainer(limit_val_batches=0, max_steps=1, accumulate_grad_batches=2).fit(model, _data(batch_size=2))


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_update_packs_each_prompts_samples_and_equals_the_plain_update(beta, monkeypatch):
    """The update's policy (and reference) forward packs each prompt's G samples around their prompt (4D block mask)
    and gives the loss, metrics and gradients of ``share_prompt=False`` (float64, up to the float32 rounding of the
    norms) on the same samples and advantages."""
    import ltune.packing as sp
    from ltune.forward import hidden_states

    masks = []
    monkeypatch.setattr(sp, "hidden_states", lambda m, i, a, p=None: masks.append(a.dim()) or hidden_states(m, i, a, p))
    out, samples = [], None
    for share in (True, False):
        torch.manual_seed(0)
        model = GRPO(backbone=micro_backbone(), num_generations=4, max_completion_length=8, beta=beta, loss_type="bnpo",
                     share_prompt=share)  # fmt: skip
        model.configure_model()
        model.double()
        if samples is None:
            samples = model.rollout(_prompt_batch(model.backbone))
            advantages = torch.randn(samples.completion_ids.shape[0], dtype=torch.float64)
        loss, metrics = GRPO.update_loss(model, samples, advantages)
        loss.backward()
        out.append((loss, metrics, [p.grad for p in model.model.parameters() if p.grad is not None]))
    assert masks == ([4, 4] if beta else [4])
    (l1, m1, g1), (l0, m0, g0) = out
    torch.testing.assert_close(l1, l0, rtol=1e-9, atol=1e-10)
    for k in m1:
        torch.testing.assert_close(m1[k], m0[k], rtol=1e-9, atol=1e-9)
    assert len(g1) == len(g0) > 0
    for a, b in zip(g1, g0, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6 * b.abs().max().item())
