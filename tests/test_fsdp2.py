"""FSDP2 on CPUs: ``configs/trainer/fsdp2.yaml`` (Lightning's ModelParallelStrategy, ``fully_shard`` over gloo) on two
processes trains the same weights as one process, for SFT, for DPO (a frozen reference copy beside the policy), for
SFT with LoRA (only the adapters train) and for GRPO (TTRL).

Each comparison is built so that both runs do the same arithmetic, and the consolidated checkpoints' weights are
compared, not only the metrics. SFT, DPO and LoRA: one row (pair) per rank and step against one process with one row
per micro-batch and ``accumulate_grad_batches=2`` (rank ``r`` at step ``k`` holds shuffled row ``2k + r``, which is
micro-batch ``2k + r`` of the single process; FSDP2 averages the two ranks' gradients as accumulation averages the
micro-batches'), with plain SGD so that a gradient off by a factor (a sum instead of a mean) shows, which Adam's
normalisation would hide.
GRPO: every training row is the same prompt, so both ranks sample the completions the single process samples (same
seed) and their averaged gradient is its gradient; it keeps the config's AdamW, whose state is sharded. Validation
runs on disjoint shards per rank (different prompts, so greedy generation stops at different steps per rank).

Tolerance: halving is exact in floating point, so (g0 + g1) / 2 (reduce-scatter) and g0 / 2 + g1 / 2 (accumulation)
are the same float32 numbers, the all-gathered weights are bit copies, and each rank runs the single process's
kernels on the same one-row batches: the weights are expected bit-identical. They must agree within 1e-4 of the
distance they moved from the initialisation (a wrong shard, a missing or doubled gradient reduction moves them by
about that distance). Validation batches differ in shape between 1 and 2 processes (padding to the longest row of
37 vs. ~19 rows), and the metrics reduce in another order: 1e-4 relative, as the DDP test; token counts and exact
match are exact.
"""

from pathlib import Path

import pytest
import torch

from tests.conftest import MICRO, ROOT, fit_side_by_side, read_metrics, write_jsonl

FSDP2 = ["--config", str(ROOT / "configs/trainer/fsdp2.yaml")]
COMMON = [*MICRO, "--trainer.enable_progress_bar=false", "--validate_around_fit=false", "--trainer.log_every_n_steps=1"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    (ckpt,) = (run / "checkpoints").glob("*.ckpt")
    assert ckpt.is_file()  # save_distributed_checkpoint: false, one consolidated file that one process reads
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def _initial_weights() -> dict[str, torch.Tensor]:
    from ltune.backbone import Backbone, Tiny

    tiny = Tiny(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, init_seed=0)
    return {f"model.{k}": v for k, v in Backbone(tiny=tiny).load_model().state_dict().items()}


def _last_val(run: Path) -> dict[str, str]:
    return [r for r in read_metrics(run) if r.get("val/exact_match")][-1]


def _moved(weights: dict[str, torch.Tensor]) -> float:
    """How far the weights moved from the initialisation: a LoRA ``B`` from zero (``A`` starts random, left out)."""
    init = _initial_weights()
    return max(
        (w.float() - init[k].float() if k in init else w.float() * ("lora_B" in k)).abs().max().item()
        for k, w in weights.items()
    )


def _same_weights(sharded: Path, single: Path, label: str) -> None:
    a, b = _weights(sharded), _weights(single)
    moved, diff = _moved(a), _max_diff(a, b)
    print(f"{label}: weights moved up to {moved:.3g} from the initialisation; 2 vs 1 process: max |diff| {diff:.3g}")
    assert moved > 1e-4, "the runs did not train: the comparison would be empty"
    assert diff <= 1e-4 * moved


@pytest.mark.slow
def test_fsdp2_sft_on_two_processes_matches_one_with_accumulation(tmp_path):
    args = [
        "--config",
        str(ROOT / "configs/objectives/sft.yaml"),
        *COMMON,
        "--model.init_args.optimizer.class_path=torch.optim.SGD",
        "--model.init_args.optimizer.init_args.lr=0.1",
        "--data.init_args.train.init_args.n=16",
        "--data.init_args.val.init_args.n=37",
        "--data.init_args.eval_prompts.init_args.n=11",
        "--data.init_args.batch_size=1",
        "--trainer.max_steps=4",
    ]
    sharded, single = fit_side_by_side(
        tmp_path,
        {
            "fsdp2": [*args, *FSDP2, "--trainer.val_check_interval=4"],
            "single": [*args, "--trainer.accumulate_grad_batches=2", "--trainer.val_check_interval=8"],  # 4 x 2 rows
        },
    )
    _same_weights(sharded, single, "SFT")
    va, vb = _last_val(sharded), _last_val(single)
    keys = ("val/loss", "val/token_accuracy", "val/tokens", "val/exact_match")
    print("SFT validation, 2 processes:", {k: va[k] for k in keys}, "1 process:", {k: vb[k] for k in keys})
    assert float(va["val/tokens"]) == float(vb["val/tokens"]) > 0  # every validation token counted once
    assert float(va["val/exact_match"]) == float(vb["val/exact_match"])
    for key in ("val/loss", "val/token_accuracy"):
        assert float(va[key]) == pytest.approx(float(vb[key]), rel=1e-4), key


ACCUMULATED = {  # objective: (config, arguments)
    "dpo": ("dpo", ["--data.init_args.train.init_args.n=12"]),
    "sft_lora": (  # no LoRA dropout: ranks and micro-batches would draw other masks
        "sft",
        [
            "--data.init_args.train.init_args.n=12",
            "--model.init_args.backbone.lora.r=4",
            "--model.init_args.backbone.lora.dropout=0.0",
        ],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ACCUMULATED))
def test_fsdp2_on_two_processes_matches_one_with_accumulation(name, tmp_path):
    config, extra = ACCUMULATED[name]
    args = [
        "--config",
        str(ROOT / f"configs/objectives/{config}.yaml"),
        *COMMON,
        "--model.init_args.optimizer.class_path=torch.optim.SGD",
        "--model.init_args.optimizer.init_args.lr=0.1",
        "--data.init_args.val=null",
        "--data.init_args.eval_prompts=null",
        "--data.init_args.batch_size=1",
        "--trainer.max_steps=3",
        *extra,
    ]
    runs = {"fsdp2": [*args, *FSDP2], "single": [*args, "--trainer.accumulate_grad_batches=2"]}
    sharded, single = fit_side_by_side(tmp_path, runs)
    _same_weights(sharded, single, name)


@pytest.mark.slow
def test_fsdp2_grpo_on_two_processes_matches_one(tmp_path):
    prompt = {"prompt": "What is 12 + 30? End with 'The answer is N.'", "answer": "42"}
    args = [
        "--config",
        str(ROOT / "configs/objectives/ttrl.yaml"),
        *COMMON,
        f"--data.init_args.train={write_jsonl(tmp_path / 'train.jsonl', [prompt] * 8)}",
        "--data.init_args.val.init_args.n=11",
        "--data.init_args.batch_size=1",
        "--model.init_args.num_votes=8",
        "--model.init_args.num_generations=4",
        "--model.init_args.max_completion_length=16",
        "--model.init_args.max_new_tokens=16",
        "--trainer.max_steps=3",
        "--trainer.val_check_interval=3",
    ]
    sharded, single = fit_side_by_side(tmp_path, {"fsdp2": [*args, *FSDP2], "single": args})
    _same_weights(sharded, single, "GRPO")
    keys = ("train/reward", "train/reward_std", "train/majority_voting_reward", "train/entropy")
    ta = [{k: r[k] for k in keys} for r in read_metrics(sharded) if r.get("train/reward")]
    tb = [{k: r[k] for k in keys} for r in read_metrics(single) if r.get("train/reward")]
    print("GRPO train, 2 processes:", ta, "1 process:", tb)
    assert len(ta) == len(tb) == 3
    for ra, rb in zip(ta, tb):  # rank 0 logs its own values: the same prompt and samples as the single process
        for k in keys:
            assert float(ra[k]) == pytest.approx(float(rb[k]), rel=1e-4), k
    assert _last_val(sharded)["val/exact_match"] == _last_val(single)["val/exact_match"]
