"""Reward functions (ltune/reward_funcs.py): TRL's call signature and weighted sum, the built-ins by hand and against
TRL's own reward functions, NaN-aware advantages, each failure class as one line, and a user's module from YAML."""

from __future__ import annotations

import functools
import json
import math

import pytest
import torch

from ltune.cli import main
from ltune.generation import Samples
from ltune.losses.grpo import group_advantages, rloo_advantages
from ltune.reward_funcs import (
    PatternReward,
    RewardError,
    SoftOverlongPunishment,
    accuracy_reward,
    call_rewards,
    format_reward,
    reward_metrics,
    reward_name,
    score_rollouts,
    weighted_sum,
)
from tests.conftest import MICRO, ROOT, read_metrics

trl_rewards = pytest.importorskip("trl.rewards")
NAN = math.nan


def _rollouts(prompts: list, n: int = 2) -> tuple[dict, Samples]:
    """A PromptData-like batch of ``len(prompts)`` rows and ``n`` completions each: prompt ``b`` has ids ``[9] * (b +
    1)`` (left-padded with 0) and completion ``k`` of it ``k + 1`` tokens ``[5, ..., 1]``."""
    b = len(prompts)
    prompt_ids = torch.zeros(b * n, b, dtype=torch.long)
    completion_ids = torch.zeros(b * n, n, dtype=torch.long)
    for i in range(b * n):
        prompt_ids[i, b - (i // n + 1) :] = 9
        completion_ids[i, : i % n + 1] = torch.tensor([5] * (i % n) + [1])
    samples = Samples(prompt_ids, (prompt_ids > 0).long(), completion_ids, (completion_ids > 0).long(), None)
    batch = {"prompt_ids": [[9] * (k + 1) for k in range(b)], "prompt": prompts, "answer": ["4", None][:b],
             "category": ["add", "sub"][:b], "columns": [{"level": 1, "src": "x"}, {"level": 2}][:b],
             "source_row": [f"p.jsonl: row {k + 1}" for k in range(b)]}  # fmt: skip
    return batch, samples


def test_reward_functions_get_trls_arguments_and_ltunes_extras():
    seen = []

    def record(**kwargs):
        seen.append(kwargs)
        return [0.0] * len(kwargs["completions"])

    chat = [{"role": "user", "content": "2+2?"}]
    batch, samples = _rollouts(["2+2?", chat])
    score_rollouts([record], None, batch, ["a", "bb", "c", "dd"], samples, 2)
    (kw,) = seen
    assert kw["prompts"] == ["2+2?", "2+2?", chat, chat]  # as given, each for its completions
    assert kw["completions"] == [
        "a",
        "bb",
        [{"role": "assistant", "content": "c"}],
        [{"role": "assistant", "content": "dd"}],
    ]
    assert kw["completion_ids"] == [[1], [5, 1], [1], [5, 1]]  # unpadded, through the stop token
    assert kw["prompt_ids"] == [[9], [9], [9, 9], [9, 9]]
    assert kw["answer"] == ["4", "4", None, None] and kw["category"] == ["add", "add", "sub", "sub"]
    assert kw["level"] == [1, 1, 2, 2] and kw["src"] == ["x", "x", None, None]  # a column one row lacks: None
    assert kw["group_size"] == 2 and callable(kw["log_metric"])


def test_weighted_sum_counts_none_as_zero_and_leaves_out_what_no_function_scored():
    values = torch.tensor([[1.0, 0.5], [NAN, 2.0], [NAN, NAN], [0.0, NAN]])
    total = weighted_sum(values, [2.0, -1.0])  # TRL: nansum(w * r), NaN where every function returned None
    assert total[[0, 1, 3]].tolist() == [1.5, -2.0, 0.0] and math.isnan(total[2])
    m = reward_metrics(values, ["f", "g"])
    assert m["rewards/f/mean"].item() == 0.5 and m["rewards/f/std"].item() == pytest.approx(math.sqrt(0.5))
    assert m["rewards/g/mean"].item() == pytest.approx(1.25)


def test_advantages_leave_unscored_completions_out_of_the_baselines():
    """Group 0 scores 3 of 4 (1, 2, 3: mean 2, Bessel std 1); group 1 all 4; the unscored one gets advantage 0."""
    r = torch.tensor([1.0, NAN, 2.0, 3.0, 0.0, 0.0, 1.0, 1.0])
    adv, m = group_advantages(r, 4, "group")
    assert adv[:4].tolist() == pytest.approx([-1 / (1 + 1e-4), 0.0, 0.0, 1 / (1 + 1e-4)])
    s = torch.tensor([0.0, 0.0, 1.0, 1.0]).std()  # group 1 as before: no NaN, the plain formula
    assert adv[4:].tolist() == pytest.approx(((torch.tensor([0.0, 0.0, 1.0, 1.0]) - 0.5) / (s + 1e-4)).tolist())
    from trl.trainer.utils import nanstd

    assert m["reward_std"].item() == pytest.approx(nanstd(r).item())  # TRL logs the batch's
    assert m["reward"].item() == pytest.approx(8 / 7)
    rloo, _ = rloo_advantages(r, 4)  # leave-one-out over the scored others: 1 - (2 + 3) / 2, 0, 2 - 2, 3 - 1.5
    assert rloo[:4].tolist() == pytest.approx([-1.5, 0.0, 0.0, 1.5])


def test_rows_without_an_answer_are_unscored_and_counted_not_an_error():
    """A batch whose rows have no answer (``PromptData`` always passes the column): None for each, and the share
    scored is logged; NaN from a function means the same as None (TRL's tensor makes them one)."""
    assert accuracy_reward(["4", "5"], answer=[None, None]) == [None, None]
    batch, samples = _rollouts(["a", "b"])
    total, m = score_rollouts([accuracy_reward, lambda **k: [NAN, 1.0, NAN, 1.0]], None, batch, ["4"] * 4, samples, 2)
    assert m["rewards/accuracy_reward/scored"].item() == 0.5 and m["rewards/<lambda>/scored"].item() == 0.5
    assert math.isnan(total[2]) and total[[0, 1, 3]].tolist() == [1.0, 2.0, 1.0]  # row 2: nothing scored it


def test_weights_that_do_not_match_the_rewards_and_columns_named_like_arguments_stop(tmp_path):
    from ltune.objectives import GRPO, TTRL
    from tests.conftest import micro_backbone

    model = TTRL(backbone=micro_backbone(), num_votes=2, num_generations=2, reward_weights=[1.0, 2.0])
    with pytest.raises(RewardError, match="2 reward_weights for 1 rewards"):  # TTRL's one default: MajorityVote
        model.configure_model()
    with pytest.raises(ValueError, match="2 reward_weights for 1 reward_funcs"):
        GRPO(reward_funcs=[accuracy_reward], reward_weights=[1.0, 2.0])
    batch, samples = _rollouts(["a", "b"])
    batch["columns"] = [{"completions": "x"}, {}]
    with pytest.raises(RewardError, match="p.jsonl: row 1: column 'completions' has the name of a reward function"):
        score_rollouts([accuracy_reward], None, batch, ["4"] * 4, samples, 2)


def test_rlaif_rewards_score_what_they_should():
    """``RewardModelScore``: each prompt + completion right-padded scores as the sequence alone; ``JudgeScore``: the
    judge reads the question as the row gives it (a message prompt: its non-system turns), not template text."""
    from ltune.objectives import RewardModel
    from ltune.objectives.rlaif import JudgeScore, RewardModelScore
    from tests.conftest import micro_backbone

    torch.manual_seed(0)
    rm = RewardModel(backbone=micro_backbone())
    rm.configure_model()
    torch.nn.init.normal_(rm.value_head.weight)
    scorer = RewardModelScore("unused.ckpt")
    scorer.model, scorer.objective = rm.eval(), rm
    prompt_ids, completion_ids = [[5, 6, 7], [8]], [[9, 10], [11, 12, 13, 1]]
    got = scorer(prompt_ids=prompt_ids, completion_ids=completion_ids)
    for g, p, c in zip(got, prompt_ids, completion_ids):
        ids = torch.tensor([p + c])
        assert g == pytest.approx(rm.score(ids, torch.ones_like(ids)).item(), abs=1e-6)

    class Recorder:
        def score(self, prompts, responses):
            self.seen = (prompts, responses)
            return torch.zeros(len(prompts))

    judge = JudgeScore(Recorder())
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    judge(prompts=["3+3?", chat], completions=["6", [{"role": "assistant", "content": "4"}]])
    assert judge.judge.seen == (["3+3?", "2+2?"], ["6", "4"])


def test_builtins_by_hand():
    texts = ["so 2+2=4. The answer is 4.", "\\boxed{5}", "I think 4", "nothing"]
    assert accuracy_reward(texts, answer=["4", "4", "4", None]) == [1.0, 0.0, 1.0, None]
    with pytest.raises(ValueError, match="no 'answer' column"):
        accuracy_reward(texts)
    assert format_reward(texts) == [1.0, 1.0, 0.0, 0.0]
    assert format_reward([[{"role": "assistant", "content": "The answer is 3."}]]) == [1.0]
    punish = SoftOverlongPunishment(max_length=10, cache=4)  # free up to 6 tokens, -1/4 per token to 10, then -1
    assert punish(completion_ids=[[1] * k for k in (6, 7, 10, 11)]) == [0.0, -0.25, -1.0, -1.0]
    assert reward_name(functools.partial(accuracy_reward, answer=["4"])) == "accuracy_reward"
    assert reward_name(punish) == "SoftOverlongPunishment"


def test_builtins_equal_trls_reward_functions():
    trl_punish = trl_rewards.get_soft_overlong_punishment(max_completion_len=20, soft_punish_cache=5)
    ids = [[7] * k for k in range(0, 26)]
    assert SoftOverlongPunishment(20, 5)(completion_ids=ids) == pytest.approx(trl_punish(completion_ids=ids))
    texts = ["<think>a</think>b", "<think>a\n</think>\nb", "x<think>a</think>", "<think>a<think>b</think>", "<think>"]
    conv = [[{"role": "assistant", "content": t}] for t in texts]
    think = PatternReward(r"^<think>(?!.*<think>)(.*?)</think>.*$")
    assert think(completions=texts) == trl_rewards.think_format_reward(conv) == [1.0, 1.0, 0.0, 0.0, 0.0]
    # and TRL's function itself runs as an entry, on conversational completions as TRL passes them
    values = call_rewards([trl_rewards.think_format_reward], ["r"] * 5, {"completions": conv})
    assert values[:, 0].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_each_failure_stops_with_one_line_naming_the_function_and_the_row():
    batch, samples = _rollouts(["a", "b"])
    texts = ["ok", "ok", "bad", "ok"]

    def raises_on_bad(completions, **kwargs):
        return [1 / 0 if c == "bad" else 1.0 for c in completions]

    def too_few(completions, **kwargs):
        return [1.0]

    def words(completions, **kwargs):
        return ["high" if c == "bad" else 1.0 for c in completions]

    def infinite(completions, **kwargs):
        return [math.inf if c == "bad" else 1.0 for c in completions]

    cases = {
        raises_on_bad: "reward 'raises_on_bad' raised ZeroDivisionError: division by zero on completion 2 "
        "(p.jsonl: row 2)",
        too_few: "reward 'too_few' returned 1 values for 4 completions: return a list, one per completion",
        words: "reward 'words' returned 'high' (str) for completion 2 (p.jsonl: row 2): return a finite number",
        infinite: "reward 'infinite' returned inf (float) for completion 2 (p.jsonl: row 2)",
    }
    for fn, message in cases.items():
        with pytest.raises(RewardError) as err:
            score_rollouts([fn], None, batch, texts, samples, 2)
        assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    tensors = score_rollouts([lambda completions, **k: torch.ones(len(completions))], None, batch, texts, samples, 2)
    assert tensors[0].tolist() == [1.0] * 4  # a tensor or numpy array of one value per completion is fine


def _prompts(tmp_path) -> str:
    rows = [{"prompt": "What is 2+2?", "answer": "4", "unit": "apples"}, {"prompt": "What is 3+3?", "answer": "6"}]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


GRPO = str(ROOT / "configs/objectives/grpo.yaml")
FAST = [*MICRO, "--trainer.max_steps=2", "--trainer.enable_progress_bar=false", "--model.init_args.num_generations=2",
        "--model.init_args.max_completion_length=8", "--trainer.enable_checkpointing=false"]  # fmt: skip


@pytest.mark.slow
def test_a_users_reward_module_runs_from_yaml_and_its_metric_is_logged(tmp_path, monkeypatch):
    """``my_rewards.py`` in the working directory, named in a config as a TRL user names it; a row column it reads
    (``unit``) reaches it; built-ins sit beside it in the same list."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_rewards.py").write_text(
        "def mentions_unit(completions, unit, **kwargs):\n"
        "    return [None if u is None else float(u in c) - 0.5 for c, u in zip(completions, unit)]\n"
    )
    config = tmp_path / "rewards.yaml"
    config.write_text(
        "model:\n  init_args:\n    reward_funcs:\n      - my_rewards.mentions_unit\n"
        "      - ltune.reward_funcs.format_reward\n    reward_weights: [1.0, 0.5]\n"
    )
    main(["fit", "--config", GRPO, "--config", str(config), *FAST, f"--data.init_args.train={_prompts(tmp_path)}"])
    (run,) = (tmp_path / "runs" / "grpo").glob("version_*")
    rows = [r for r in read_metrics(run) if r.get("train/rewards/mentions_unit/mean") not in (None, "")]
    assert len(rows) == 2
    for r in rows:  # the tiny model never writes "apples": row 1's completions score -0.5, row 2's None
        assert float(r["train/rewards/mentions_unit/mean"]) == -0.5
        assert "train/rewards/format_reward/mean" in r


def test_a_reward_that_cannot_be_imported_stops_before_any_generation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sampled = []
    monkeypatch.setattr("ltune.objectives.grpo.sample_groups", lambda *a, **k: sampled.append(1))
    with pytest.raises(SystemExit) as err:
        main(["fit", "--config", GRPO, *FAST, "--model.init_args.reward_funcs=[my_rewards.nope]"])
    message = str(err.value.code)
    assert message.startswith('ltune fit: config: "model') and "my_rewards.nope" in message and "\n" not in message
    assert not sampled


def test_a_reward_that_fails_in_training_stops_with_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.py").write_text(
        "def half(completions, **kwargs):\n    return [0.5] * (len(completions) // 2)\n"
    )
    with pytest.raises(SystemExit) as err:
        main(["fit", "--config", GRPO, *FAST, "--model.init_args.reward_funcs=[broken.half]",
              "--model.init_args.reward_weights=null", f"--data.init_args.train={_prompts(tmp_path)}",
              "--trainer.logger=false"])  # fmt: skip
    assert str(err.value.code) == (
        "ltune fit: reward 'half' returned 2 values for 4 completions: return a list, one per completion"
    )
