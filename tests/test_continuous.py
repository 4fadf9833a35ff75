"""``ContinuousSampler`` (transformers' continuous batching): greedy completions equal ``generate``'s, seeded sampling
repeats, groups are prompt-major with exact masks, the model comes back as it was, and GRPO trains on it from a
config line."""

import torch

from ltune.continuous import ContinuousSampler
from ltune.datamodules import EmbeddedTasks, PromptData
from ltune.generation import HFSampler, completion_mask
from ltune.objectives import GRPO
from tests.conftest import micro_backbone, quiet_trainer


def _batch(backbone, n=3):
    dm = PromptData(train=EmbeddedTasks(format="prompts", n=n, categories=["add"]))
    dm.tokenizer = backbone.tokenizer
    dm.setup()
    return dm.collate(dm.data["train"])


def test_greedy_equals_generate_and_the_model_comes_back_as_it_was():
    bb = micro_backbone()
    model, tok = bb.load_model(), bb.tokenizer
    model.train()
    attn = model.config._attn_implementation
    batch = _batch(bb)
    kw = dict(num_samples=2, max_new_tokens=12, temperature=0.0, eos_token_id=tok.eos_token_id, pad_token_id=0)
    hf = HFSampler()(model, batch["prompt_ids"], batch["prompt_mask"], **kw)
    cb = ContinuousSampler()(model, batch["prompt_ids"], batch["prompt_mask"], **kw)
    assert torch.equal(cb.completion_mask, hf.completion_mask) and cb.completion_mask.sum() > 0
    assert torch.equal(cb.completion_ids, hf.completion_ids)
    assert torch.equal(cb.prompt_ids, hf.prompt_ids)
    assert model.training and model.config._attn_implementation == attn


def test_seeded_sampling_repeats_with_prompt_major_groups_and_exact_masks():
    bb = micro_backbone()
    model, tok = bb.load_model(), bb.tokenizer
    batch = _batch(bb, n=2)
    kw = dict(num_samples=4, max_new_tokens=16, temperature=1.0, eos_token_id=tok.eos_token_id, pad_token_id=0)
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(ContinuousSampler()(model, batch["prompt_ids"], batch["prompt_mask"], **kw))
    a, b = runs
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert a.completion_ids.shape[0] == 8 and torch.equal(a.prompt_ids, batch["prompt_ids"].repeat_interleave(4, 0))
    assert len({tuple(r.tolist()) for r in a.completion_ids[:4]}) > 1  # sampled, not copies
    mask = a.completion_mask
    assert torch.equal(mask, completion_mask(a.completion_ids, tok.eos_token_id) * mask)  # nothing after a stop
    assert (a.completion_ids[mask == 0] == 0).all()
    stopped = ((a.completion_ids == tok.eos_token_id) & (mask == 1)).any(1)
    assert (mask.sum(1)[~stopped] == 16).all()  # a row without a stop ran to max_new_tokens


def test_grpo_trains_with_the_continuous_sampler():
    model = GRPO(backbone=micro_backbone(), num_generations=2, max_completion_length=6, sampler=ContinuousSampler())
    dm = PromptData(train=EmbeddedTasks(format="prompts", n=4, categories=["add"]), batch_size=2)
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(model, dm)
    assert trainer.global_step == 2 and model.last_rollouts["samples"].completion_ids.shape[0] == 4
    assert isinstance(model.sampler, ContinuousSampler)
