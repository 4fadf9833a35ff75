"""RLSC objective: one step raises the likelihood of the sampled completions; the config runs through the CLI."""

from pathlib import Path

import pytest
import torch

from ltune.cli import main
from ltune.datamodules import EmbeddedTasks, PromptData
from ltune.forward import completion_logprobs
from ltune.generation import training_inputs
from ltune.objectives import RLSC
from tests.conftest import MICRO, ROOT, micro_backbone, quiet_trainer, read_metrics


class _Recorder(RLSC):
    def agreement(self, texts, batch):
        self.texts = texts
        return super().agreement(texts, batch)


def test_one_step_raises_the_tempered_likelihood_of_the_samples():
    model = _Recorder(
        backbone=micro_backbone(),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.05),
        num_samples=4,
        max_completion_length=10,
    )
    samples_seen = []
    orig = model.sampler

    def sampler(*args, **kwargs):
        out = orig(*args, **kwargs)
        samples_seen.append(out)
        return out

    model.sampler = sampler
    trainer = quiet_trainer(limit_val_batches=0, max_steps=1)
    dm = PromptData(train=EmbeddedTasks(format="prompts", n=4, categories=["add"]), batch_size=2)
    trainer.fit(model, dm)
    (samples,) = samples_seen
    width = samples.prompt_ids.shape[1]

    def seq_logp(m):
        with torch.no_grad():
            return completion_logprobs(m, **training_inputs(samples), temperature=0.5).logprobs[:, width - 1 :].sum(1)

    # every weight exp(s_i) + alpha is positive: a small SGD step raises sum_i (w_i + alpha) s_i
    initial = micro_backbone().load_model()
    before, after = seq_logp(initial), seq_logp(model.model)
    w = before.exp() + 0.1
    assert (w * (after - before)).sum() > 0
    for key in ("loss", "seq_logprob", "weight", "entropy", "majority_agreement", "ground_truth_ratio", "alpha"):
        assert f"train/{key}" in trainer.callback_metrics, key


@pytest.mark.parametrize("placebo", [False, True])
def test_rlsc_config_runs_through_the_cli(placebo, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            str(ROOT / "configs/objectives/rlsc.yaml"),
            *MICRO,
            "--trainer.max_steps=2",
            "--trainer.val_check_interval=2",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            "--data.init_args.train.init_args.n=4",
            "--data.init_args.val.init_args.n=4",
            "--data.init_args.batch_size=2",
            "--model.init_args.num_samples=2",
            "--model.init_args.max_completion_length=8",
            "--model.init_args.max_new_tokens=8",
            f"--model.init_args.placebo={placebo}",
        ]
    )
    assert "validation before -> after fit" in capsys.readouterr().out
    logged = {k for r in read_metrics(Path("runs/rlsc/version_0")) for k, v in r.items() if v}
    assert {"train/loss", "train/weight", "train/majority_agreement", "val/exact_match"} <= logged


def test_placebo_permutes_weights_within_each_prompts_group(monkeypatch):
    import ltune.objectives.rlsc as mod

    seen = []
    real = mod.rlsc_loss
    monkeypatch.setattr(mod, "rlsc_loss", lambda *a: seen.append(a[-1]) or real(*a))
    dm = PromptData(train=EmbeddedTasks(format="prompts", n=4, categories=["add"]), batch_size=2)
    model = RLSC(backbone=micro_backbone(), num_samples=4, max_completion_length=4, placebo=True)
    quiet_trainer(limit_val_batches=0, max_steps=2).fit(model, dm)
    for order in seen:
        assert sorted(order[:4].tolist()) == [0, 1, 2, 3] and sorted(order[4:].tolist()) == [4, 5, 6, 7]
    assert any(not torch.equal(o, torch.arange(8)) for o in seen)  # not the identity
