"""HFSampler's shared prefill: each prompt prefilled once and its KV cache copied to its samples gives the samples
(and sampler log-probs) that ``generate``'s own per-copy prefill gives, on left-padded prompts of unequal length."""

import pytest
import torch

from ltune.datamodules import EmbeddedTasks, PromptData
from ltune.generation import HFSampler
from tests.conftest import micro_backbone


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_shared_prefill_samples_what_generate_samples(temperature):
    backbone = micro_backbone()
    model = backbone.load_model().double()  # float64: no rounding flips a sampled token between the two paths
    dm = PromptData(train=EmbeddedTasks(format="prompts", n=3), batch_size=3)
    dm.tokenizer = tok = backbone.tokenizer
    dm.setup("fit")
    batch = dm.collate(dm.data["train"])
    assert batch["prompt_mask"].sum(1).unique().numel() > 1  # unequal lengths: left padding in the batch
    kw = dict(num_samples=4, max_new_tokens=12, temperature=temperature, eos_token_id=tok.eos_token_id,
              pad_token_id=tok.pad_token_id)  # fmt: skip
    out = []
    for share in (True, False):
        torch.manual_seed(0)
        out.append(HFSampler(with_logprobs=True, share_prefill=share)(model, batch["prompt_ids"], batch["prompt_mask"],
                                                                      **kw))  # fmt: skip
    shared, plain = out
    assert torch.equal(shared.completion_ids, plain.completion_ids)
    assert torch.equal(shared.completion_mask, plain.completion_mask)
    assert torch.equal(shared.prompt_ids, plain.prompt_ids)
    torch.testing.assert_close(shared.logprobs, plain.logprobs, rtol=0, atol=1e-9)
    assert len({tuple(r) for r in shared.completion_ids.tolist()}) > 3  # the samples differ: sampling, not greedy
