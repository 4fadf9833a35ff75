"""SampleTable: a table every N steps on loggers with ``log_table``, and samples.jsonl beside the metrics."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from ltune import SFT
from ltune.callbacks import SampleTable
from ltune.datamodules import EmbeddedTasks, InstructionData
from ltune.generation import HFSampler, decode
from ltune.rewards import extract_answer, is_equivalent
from tests.conftest import micro_backbone


class TableLogger(CSVLogger):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tables = []

    def log_table(self, key, columns, data, step):
        self.tables.append((key, columns, data, step))


def test_sample_table_every_n_steps(tmp_path, one_thread):
    torch.manual_seed(0)
    model = SFT(backbone=micro_backbone(), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    data = InstructionData(train=EmbeddedTasks(n=24), eval_prompts=EmbeddedTasks(format="prompts", n=5, split="val"),
                           max_length=64, batch_size=4)  # fmt: skip
    logger = TableLogger(tmp_path)
    trainer = L.Trainer(accelerator="cpu", max_steps=6, logger=logger, limit_val_batches=0, enable_progress_bar=False,
                        callbacks=[SampleTable(every_n_steps=3, num_prompts=3, max_new_tokens=12)],
                        enable_checkpointing=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, data)
    assert [(t[0], t[3]) for t in logger.tables] == [("samples", 3), ("samples", 6)]
    _, columns, rows, _ = logger.tables[-1]
    assert columns == ["step", "prompt", "completion", "answer", "correct"] and len(rows) == 3
    # the logged completions are the model's greedy completions of the first eval prompts (independent recompute)
    tok = model.tokenizer
    batch = data.collate(data.data["eval"][:3])
    texts = decode(tok, HFSampler()(model.model, batch["prompt_ids"], batch["prompt_mask"], max_new_tokens=12,
                                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))  # fmt: skip
    assert [r[2] for r in rows] == texts
    assert [r[4] for r in rows] == [is_equivalent(extract_answer(t), a) for t, a in zip(texts, batch["answer"])]
    lines = [json.loads(x) for x in open(tmp_path / "lightning_logs/version_0/samples.jsonl")]
    assert len(lines) == 6 and lines[0]["step"] == 3


def test_grpo_logs_the_rollouts_it_trained_on_with_reward_and_advantage(tmp_path, one_thread):
    """TRL's log_completions: the step's own completions, each with its reward and its group-relative advantage."""
    from ltune.datamodules import PromptData
    from ltune.objectives import GRPO

    torch.manual_seed(0)
    model = GRPO(backbone=micro_backbone(), num_generations=3, max_completion_length=6, scale_rewards="none",
                 reward_funcs=[lambda completions, **kw: [float(len(c)) for c in completions]])  # fmt: skip
    data = PromptData(train=EmbeddedTasks(format="prompts", n=8, categories=["add"]), batch_size=2)
    seen = []

    class Keep(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            seen.append((batch, dict(module.last_rollouts)))

    logger = TableLogger(tmp_path)
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=logger, enable_progress_bar=False,
                        callbacks=[Keep(), SampleTable(every_n_steps=2, num_prompts=1)],
                        enable_checkpointing=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, data)
    ((key, columns, rows, step),) = logger.tables
    assert columns == ["step", "prompt", "completion", "reward", "advantage"] and step == 2 and len(rows) == 3
    batch, rollouts = seen[-1]
    assert [r[2] for r in rows] == rollouts["completions"][:3]
    rewards = [float(len(c)) for c in rollouts["completions"][:3]]  # the reward function, recomputed
    assert [r[3] for r in rows] == rewards
    assert [r[4] for r in rows] == pytest.approx([x - sum(rewards) / 3 for x in rewards])  # scale_rewards="none"
    assert all(batch["prompt"][0] in r[1] for r in rows)  # the first prompt, as rendered for the model


@pytest.mark.parametrize(
    "config",
    ["objectives/grpo.yaml", "objectives/ttrl.yaml", "objectives/rlaif.yaml", "objectives/rlaif_direct.yaml",
     "objectives/sft.yaml", "quickstart.yaml", "quickstart_smollm2.yaml", "loops/rest_em.yaml", "loops/lion.yaml"],
)  # fmt: skip
def test_shipped_generative_configs_log_a_completions_table(config):
    """The GRPO family, the loops and SFT's generative evaluation log completions without the user adding it."""
    import yaml

    from tests.conftest import ROOT

    callbacks = yaml.safe_load((ROOT / "configs" / config).read_text())["trainer"].get("callbacks") or []
    assert [c["class_path"] for c in callbacks].count("ltune.callbacks.SampleTable") == 1
