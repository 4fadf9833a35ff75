"""DDP stays exact: ``ltune fit`` on two CPU processes (gloo) ends with the same weights as one process, for every
objective whose step runs through the fused log-prob path, packing, a cached reference or sampling.

Supervised and preference objectives (SFT, CFT, ORPO, DPO with a live or a cached reference, SimPO, CUT, CoIN, the
reward model on hard labels, KTO): one
row (pair) per rank and step against one process with one row per micro-batch and ``accumulate_grad_batches=2``. The
sampler shuffles once for both (``seed + epoch``) and deals rank ``r`` the rows ``r::2``, so rank ``r`` at step ``k``
holds micro-batch ``2k + r`` of the single process; DDP averages the two ranks' gradients as accumulation averages the
micro-batches'. Plain SGD (lr 0.1), so a gradient off by a factor (a sum instead of a mean, a loss scaled per rank)
shows, which Adam's normalisation would hide. CoIN runs a pair of rows per batch (its hard negatives) with
``gather_negatives: false``: negatives from the rank's own batch, as a micro-batch's (with ``gather_negatives: true``
they come from every rank, by design not what one process sees). KTO's KL estimate is a statistic of the whole batch,
gathered over the ranks: two processes with a row each match one process with both rows in one batch.

The sampling objectives (GRPO, TTRL with group and batch reward scaling, RLSC, direct RLAIF): every training row is
the same prompt, so each rank samples the completions the single process samples (the same seed, per-rank streams that
start alike) and the averaged gradient is the single process's gradient. Batch statistics then agree on every rank, so
a second test gives each rank its own prompt and completions fixed by the prompt (``tests.samplers.ScriptedSampler``,
different lengths and rewards per prompt) and checks what GRPO's docstring says: ``scale_rewards: batch`` and RLOO's
``normalize_advantages`` are per rank (two processes = one with accumulation), DAPO's token count is global (two
processes = one process with both ranks' prompts in one batch).

Tolerance: halving is exact in floating point, so (g0 + g1) / 2 (all-reduce) and g0 / 2 + g1 / 2 (accumulation) are
the same float32 numbers: the weights must agree within 1e-5 of the distance they moved from the initialisation.
"""

from pathlib import Path

import pytest
import torch

from tests.conftest import MICRO, ROOT, fit_side_by_side, write_jsonl

COMMON = [*MICRO, "--trainer.enable_progress_bar=false", "--validate_around_fit=false", "--trainer.max_steps=3"]
SGD = ["--model.init_args.optimizer.class_path=torch.optim.SGD", "--model.init_args.optimizer.init_args.lr=0.1"]
NO_EVAL = ["--data.init_args.val=null", "--data.init_args.eval_prompts=null"]
PROMPT = {"prompt": "What is 12 + 30? End with 'The answer is N.'", "answer": "42"}

REWARD = [  # a reward that varies within a group at these lengths: the overlong penalty past 4 tokens
    '--model.init_args.reward_funcs=[{"class_path": "ltune.reward_funcs.SoftOverlongPunishment", '
    '"init_args": {"max_length": 12, "cache": 8}}]',
    "--model.init_args.reward_weights=[1.0]",
]

# objective: (config, extra arguments, "rows" (accumulation over micro-batches), "pairs" (two rows a micro-batch),
# "labelled" (hard-labelled pairs written here), "batch" (a batch statistic gathered over the ranks: one process with
# both ranks' rows in one batch) or "same" (identical rows))
CASES = {
    "sft": ("sft", ["--data.init_args.train.init_args.n=12"], "rows"),
    "cft": ("cft", ["--data.init_args.train.init_args.n=12"], "rows"),
    "orpo": ("orpo", ["--data.init_args.train.init_args.n=12"], "rows"),
    "dpo": ("dpo", ["--data.init_args.train.init_args.n=12"], "rows"),
    "dpo_cached": (
        "dpo",
        ["--data.init_args.train.init_args.n=12", "--model.init_args.precompute_ref_log_probs=true"],
        "rows",
    ),
    "simpo": ("simpo", ["--data.init_args.train.init_args.n=12"], "rows"),
    "cut": ("cut", ["--data.init_args.train.init_args.n=12"], "rows"),
    "coin": ("coin", ["--data.init_args.train.init_args.n=24"], "pairs"),
    "reward_model": (  # hard labels (a user's chosen/rejected pairs): an untrained micro judge would label all 0.5
        "rlaif_reward_model",
        ["--data.init_args.judge=null", "--data.init_args.labels_path=null", "--data.init_args.columns=null"],
        "labelled",
    ),
    "kto": ("kto", ["--data.init_args.train.init_args.n=6"], "batch"),  # its KL estimate spans the ranks
    "kto_cached": (
        "kto",
        ["--data.init_args.train.init_args.n=6", "--model.init_args.precompute_ref_log_probs=true"],
        "batch",
    ),
    "grpo": ("grpo", REWARD, "same"),
    "ttrl_scale_group": ("ttrl", ["--model.init_args.scale_rewards=group"], "same"),
    "ttrl_scale_batch": ("ttrl", ["--model.init_args.scale_rewards=batch"], "same"),
    "rlsc": ("rlsc", ["--model.init_args.num_samples=4"], "same"),
    "rlaif_direct": ("rlaif_direct", ["--model.init_args.num_generations=4"], "same"),
}
SAMPLING = [
    "--model.init_args.max_completion_length=12",
    "--model.init_args.max_new_tokens=12",
    "--data.init_args.batch_size=1",
]


# distinct prompts per rank: (arguments, what one process does to match two: "accumulate" or "batch")
PER_RANK = {
    "scale_batch": (["--model.init_args.scale_rewards=batch", "--model.init_args.loss_type=bnpo"], "accumulate"),
    "rloo_normalize": (
        [
            "--model.init_args.advantage_estimator=rloo",
            "--model.init_args.normalize_advantages=true",
            "--model.init_args.loss_type=bnpo",
        ],
        "accumulate",
    ),
    "dapo_tokens": (["--model.init_args.loss_type=dapo"], "batch"),
}


def _args(name: str, tmp_path: Path) -> tuple[list[str], list[str]]:
    """The ``ltune fit`` arguments of the two-process run and of the one-process run."""
    config, extra, kind = CASES[name]
    args = ["--config", str(ROOT / f"configs/objectives/{config}.yaml"), *COMMON, *SGD, *NO_EVAL, *extra]
    if config == "cft":
        args.remove("--data.init_args.val=null")  # CritiqueData takes no val rows
        args.append("--model.init_args.scheduler=null")
    if kind == "labelled":
        pairs = [
            {
                "prompt": f"What is {i} + {i}?",
                "response_a": f"It is {2 * i}.",
                "response_b": f"{i + 7}",
                "preference": i % 2,
            }
            for i in range(12)
        ]
        args.append(f"--data.init_args.train={write_jsonl(tmp_path / 'pairs.jsonl', pairs)}")
    if kind == "same":
        train = write_jsonl(tmp_path / "train.jsonl", [PROMPT] * 8)
        args += [f"--data.init_args.train={train}", *SAMPLING]
        if config == "ttrl":
            args += ["--model.init_args.num_votes=4", "--model.init_args.num_generations=4"]
        return [*args, "--trainer.strategy=ddp", "--trainer.devices=2"], args
    if kind == "batch":
        ddp = [*args, "--data.init_args.batch_size=1", "--trainer.strategy=ddp", "--trainer.devices=2"]
        return ddp, [*args, "--data.init_args.batch_size=2"]
    per_batch = "2" if kind == "pairs" else "1"
    args.append(f"--data.init_args.batch_size={per_batch}")
    ddp = [*args, "--trainer.strategy=ddp", "--trainer.devices=2"]
    return ddp, [*args, "--trainer.accumulate_grad_batches=2"]


def _policy(run: Path) -> dict[str, torch.Tensor]:
    """The trained weights from the run's last checkpoint: the model and a reward model's value head (a frozen
    reference copy left out)."""
    ckpt = sorted((run / "checkpoints").glob("*.ckpt"))[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v.float() for k, v in state.items() if k.startswith(("model.", "value_head."))}


def _initial() -> dict[str, torch.Tensor]:
    from ltune.backbone import Backbone, Tiny

    tiny = Tiny(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64, init_seed=0)
    return {f"model.{k}": v.float() for k, v in Backbone(tiny=tiny).load_model().state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_two_ddp_processes_train_the_same_weights_as_one(name, tmp_path):
    ddp_args, single_args = _args(name, tmp_path)
    ddp, single = fit_side_by_side(tmp_path, {"ddp": ddp_args, "single": single_args})
    a, b, init = _policy(ddp), _policy(single), _initial()
    init |= {k: torch.zeros_like(v) for k, v in a.items() if k.startswith("value_head.")}  # it starts at zero
    assert a.keys() == b.keys() and set(a) <= set(init)
    moved = max((a[k] - init[k]).abs().max().item() for k in a)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"{name}: weights moved up to {moved:.3g}; 2 processes vs 1: max |diff| {diff:.3g}")
    assert moved > 1e-4, "the runs did not train: the comparison would be empty"
    assert diff <= 1e-5 * moved


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PER_RANK))
def test_grpo_batch_statistics_are_per_rank_or_global_as_documented(name, tmp_path):
    extra, single_mode = PER_RANK[name]
    rows = [
        {"prompt": f"What is {i} + {3 * i + 1}? End with 'The answer is N.'", "answer": str(4 * i + 1)}
        for i in range(8)
    ]
    args = [
        "--config",
        str(ROOT / "configs/objectives/grpo.yaml"),
        *COMMON,
        *SGD,
        *NO_EVAL,
        *REWARD,
        *SAMPLING,
        f"--data.init_args.train={write_jsonl(tmp_path / 'train.jsonl', rows)}",
        "--model.init_args.sampler=tests.samplers.ScriptedSampler",
        *extra,
    ]
    single = [
        *args,
        "--trainer.accumulate_grad_batches=2" if single_mode == "accumulate" else "--data.init_args.batch_size=2",
    ]
    ddp, one = fit_side_by_side(
        tmp_path, {"ddp": [*args, "--trainer.strategy=ddp", "--trainer.devices=2"], "one": single}
    )
    a, b, init = _policy(ddp), _policy(one), _initial()
    moved = max((a[k] - init[k]).abs().max().item() for k in a)
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"{name}: weights moved up to {moved:.3g}; 2 processes vs 1 ({single_mode}): max |diff| {diff:.3g}")
    assert moved > 1e-4, "the runs did not train: the comparison would be empty"
    assert diff <= 1e-5 * moved
