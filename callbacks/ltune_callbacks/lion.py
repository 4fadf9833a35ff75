"""Lion: adversarial distillation (Jiang et al., EMNLP 2023, arXiv:2305.12870; reference code YJiangcm/Lion).

Round 0 is imitation: the teacher answers the Train Pool and the student is fine-tuned on those answers. Each later
round starts with an E-step of three stages, then fine-tunes the student on the grown Train Pool:

1. discrimination: teacher and student answer the Cache Pool; the referee scores both answers 1-10 in both orders
   (position bias cancelled by averaging); an instruction is **hard** when s_teacher - s_student >= ``threshold``;
2. generation: the teacher writes new instructions from random hard seeds (same task type, similar difficulty) and
   random easy seeds (same domain, rarer), half each; a candidate (the first line of the teacher's text) is dropped
   if it was cut by the token budget, contains "instruction", has at most 3 words, starts with punctuation or a
   non-ASCII character, or has ROUGE-L F >= ``rouge_threshold`` against the Cache Pool or an already accepted
   candidate;
3. pool update: the teacher answers the new instructions; they join the Train Pool and become the next Cache Pool.

The teacher and the referee are :mod:`ltune.judges` objects: ``LMJudge`` (a local model) or ``APIJudge`` (an
OpenAI-compatible server). ltune fit --config configs/loops/lion.yaml
"""

from __future__ import annotations

import math
import random

import lightning as L
import torch
from rouge_score.tokenizers import DefaultTokenizer

from ltune.callbacks.rounds import Rounds, read_jsonl
from ltune.datamodules import SourceLike, as_source
from ltune.io import atomic_write_jsonl
from ltune.judges import PairJudge

ANSWER_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
REFEREE_TEMPLATE = (
    "[Question]\n{question}\n\n[The Start of Assistant 1's Answer]\n{first}\n[The End of Assistant 1's Answer]\n\n"
    "[The Start of Assistant 2's Answer]\n{second}\n[The End of Assistant 2's Answer]\n\n[System]\n"
    "We would like to request your feedback on the performance of two AI assistants in response to the user question "
    "displayed above. Please rate the helpfulness, relevance, accuracy, level of details of their responses. Each "
    "assistant receives an overall score on a scale of 1 to 10, where a higher score indicates better overall "
    "performance.\nScore of the Assistant {slot}: "
)
HARD_TEMPLATE = (
    "Create a new instruction in the same domain as the given instruction, of the same task type, with a similar "
    "length and difficulty. It must be reasonable and answerable by humans.\n\n#Given Instruction#:\n{instruction}"
    "\n\n#New Instruction#:\n"
)
EASY_TEMPLATE = (
    "Create a new instruction in the same domain as the given instruction but even more rare, with a similar length "
    "and difficulty. It must be reasonable and answerable by humans.\n\n#Given Instruction#:\n{instruction}"
    "\n\n#New Instruction#:\n"
)


def keep_instruction(text: str) -> bool:
    """Lion's post-filter of a generated instruction, before the ROUGE-L check."""
    text = text.strip()
    return (
        len(text.split()) > 3
        and "instruction" not in text.lower()
        and not (text[0] in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" or not text[0].isascii())
    )


def truncated(text: str, cut: bool) -> bool:
    """Lion drops a generated instruction that was "truncated by length" (``finish_reason == "length"``). The
    instruction is the first line of the teacher's text: it is truncated when the text was cut by the token budget
    (``cut``) before that line ended; a line break before the cut ends it, like a stop sequence."""
    return cut and "\n" not in text.strip()


class Lion(Rounds):
    """Lion rounds: imitation, discrimination (referee, both orders), generation of hard/easy instructions.

    Use with :class:`ltune.SFT` and :class:`ltune.datamodules.InstructionData` (no ``train``: rows come from the
    pools). Logs per round ``round/hard``, ``round/easy``, ``round/unjudged`` (no rating could be read),
    ``round/referee_teacher`` / ``round/referee_student`` (mean two-order scores), ``round/new_hard``,
    ``round/new_easy``, ``round/truncated`` (new instructions cut by the token budget), ``round/rouge_rejected`` and
    ``round/train_pool``.

    Args:
        instructions: The initial instructions (``prompt`` column): both the Train Pool and the first Cache Pool.
        teacher: Answers instructions and writes new ones (``generate``).
        referee: Rates two answers 1-10 (``rate_pair``); the teacher itself when None. ``VerifierJudge`` checks
            answers with a solver instead (tasks a program can solve, such as the embedded ones).
        rounds: M-steps: round 0 is imitation, each later one follows an adversarial E-step (paper: 3 iterations).
        threshold: Hard when the two-order mean teacher score minus student score is at least this (paper: 1.0).
        num_new: New instructions per round, half from hard seeds and half from easy seeds (paper: 6000).
        rouge_threshold: Keep a new instruction only if its ROUGE-L F against the pool is below this (paper: 0.7).
        answer_template: Teacher prompt of an instruction (``{instruction}``), Alpaca's by default.
        referee_template: Referee prompt (``{question}``, ``{first}``, ``{second}``, ``{slot}``).
        hard_template: Teacher prompt that writes a new instruction from a hard seed.
        easy_template: Teacher prompt that writes a new instruction from an easy seed.
        answer_tokens: Token budget of teacher and student answers (paper: 1024).
        instruction_tokens: Token budget of a new instruction; None = 4 x the seed's word count (paper).
        teacher_temperature: Sampling temperature of the teacher's answers (paper: 0.7).
        instruction_temperature: Sampling temperature of the teacher's new instructions (paper: 1.0; a small local
            teacher writes fewer garbled instructions at a lower one).
        student_temperature: Sampling temperature of the student's answers (paper: 0.7).
        epochs_per_round: Epochs of each M-step.
        reset_to_base: Retrain the student from the base weights each round (the paper's choice is recalled).
        chunk_size: Instructions per E-step chunk (unit of resume).
        seed: Seed of sampling and of the seed instructions drawn; None: the run's seed (``seed_everything``).
        output_dir: Folder of the pools (relative: under the run's log folder).
    """

    def __init__(
        self,
        instructions: SourceLike,
        teacher: PairJudge,
        referee: PairJudge | None = None,
        rounds: int = 4,
        threshold: float = 1.0,
        num_new: int = 6000,
        rouge_threshold: float = 0.7,
        answer_template: str = ANSWER_TEMPLATE,
        referee_template: str = REFEREE_TEMPLATE,
        hard_template: str = HARD_TEMPLATE,
        easy_template: str = EASY_TEMPLATE,
        answer_tokens: int = 1024,
        instruction_tokens: int | None = None,
        teacher_temperature: float = 0.7,
        instruction_temperature: float = 1.0,
        student_temperature: float = 0.7,
        epochs_per_round: int = 1,
        reset_to_base: bool = True,
        chunk_size: int = 64,
        seed: int | None = None,
        output_dir: str = "rounds",
    ) -> None:
        super().__init__(rounds, epochs_per_round, reset_to_base, True, chunk_size, seed, output_dir)
        self.instructions, self.teacher, self.referee = instructions, teacher, referee or teacher
        self.threshold, self.num_new, self.rouge_threshold = threshold, num_new, rouge_threshold
        self.answer_template, self.referee_template = answer_template, referee_template
        self.hard_template, self.easy_template = hard_template, easy_template
        self.answer_tokens, self.instruction_tokens = answer_tokens, instruction_tokens
        self.teacher_temperature, self.student_temperature = teacher_temperature, student_temperature
        self.instruction_temperature = instruction_temperature
        self.rouge_tokenizer = DefaultTokenizer(use_stemmer=False)  # rouge_score's public tokenizer, as RougeScorer

    # ---- E-step items and chunks ----------------------------------------------------------------------------------
    def e_step_items(self, trainer: L.Trainer, pl_module: L.LightningModule, round: int) -> list[dict]:
        if round == 0:
            source = as_source(self.instructions)
            return [{"prompt": row["prompt"]} for row in source.load()]
        return read_jsonl(self._cache_path(round - 1))

    def e_step(self, trainer: L.Trainer, pl_module: L.LightningModule, round: int, items: list[dict]) -> list[dict]:
        if round == 0:  # imitation data: the teacher's answers
            return [{"prompt": it["prompt"], "response": a} for it, a in zip(items, self._answer(items))]
        prompts = [it["prompt"] for it in items]
        teacher, student = [it["response"] for it in items], self._student(trainer, pl_module, prompts)
        order1 = self.referee.rate_pair(prompts, teacher, student, self.referee_template)  # teacher in slot 1
        order2 = self.referee.rate_pair(prompts, student, teacher, self.referee_template)  # teacher in slot 2
        out = []
        for i, p in enumerate(prompts):
            s_t = (order1[0][i] + order2[1][i]) / 2
            s_s = (order1[1][i] + order2[0][i]) / 2
            judged = not (math.isnan(s_t) or math.isnan(s_s))
            hard = judged and s_t - s_s >= self.threshold
            out.append(
                {
                    "prompt": p,
                    "teacher": teacher[i],
                    "student": student[i],
                    "s_teacher": s_t,
                    "s_student": s_s,
                    "label": ("hard" if hard else "easy") if judged else "unjudged",
                }
            )
        return out

    # ---- generation and pools -------------------------------------------------------------------------------------
    def train_rows(
        self, trainer: L.Trainer, pl_module: L.LightningModule, round: int, produced: list[dict]
    ) -> list[dict]:
        if round == 0:
            atomic_write_jsonl(self._cache_path(0), produced)  # both pools start from the same instructions
            return produced
        pool = read_jsonl(self.paths[round - 1])
        cache = [p["prompt"] for p in produced]
        new, self._stats = [], {"truncated": 0.0, "rouge_rejected": 0.0}
        for kind, template in (("hard", self.hard_template), ("easy", self.easy_template)):
            seeds = [p["prompt"] for p in produced if p["label"] == kind]
            accepted = self._generate(seeds, template, self.num_new // 2, cache + [n["prompt"] for n in new])
            self._stats[f"new_{kind}"] = float(len(accepted))
            new += [{"prompt": a} for a in accepted]
        answered = [{"prompt": n["prompt"], "response": a} for n, a in zip(new, self._answer(new))]
        atomic_write_jsonl(self._cache_path(round), answered)
        return pool + answered

    def _generate(self, seeds: list[str], template: str, target: int, pool: list[str]) -> list[str]:
        accepted: list[str] = []
        if not seeds:
            return accepted
        pool_tokens = [self.rouge_tokenizer.tokenize(p) for p in pool]
        for _ in range(3):  # at most three passes over the shortfall
            need = target - len(accepted)
            if need <= 0:
                break
            picks = [random.choice(seeds) for _ in range(need)]
            budget = self.instruction_tokens or max(4 * max(len(s.split()) for s in picks), 16)
            prompts = [template.format(instruction=s) for s in picks]
            texts, cut = self.teacher.complete(prompts, budget, self.instruction_temperature)
            for text, was_cut in zip(texts, cut):
                if truncated(text, was_cut):
                    self._stats["truncated"] += 1
                    continue
                text = text.strip().split("\n")[0].strip()
                if not text or not keep_instruction(text):
                    continue
                tokens = self.rouge_tokenizer.tokenize(text)
                if any(_rouge_l(tokens, other) >= self.rouge_threshold for other in pool_tokens):
                    self._stats["rouge_rejected"] += 1
                    continue
                accepted.append(text)
                pool_tokens.append(tokens)
                if len(accepted) == target:
                    break
        return accepted

    def round_metrics(self, round: int, produced: list[dict], rows: list[dict]) -> dict[str, float]:
        if round == 0:
            return {"train_pool": float(len(rows))}
        judged = [p for p in produced if p["label"] != "unjudged"]
        mean = (lambda k: sum(p[k] for p in judged) / len(judged)) if judged else (lambda k: math.nan)
        counts = {k: float(sum(p["label"] == k for p in produced)) for k in ("hard", "easy", "unjudged")}
        return {
            **counts,
            "referee_teacher": mean("s_teacher"),
            "referee_student": mean("s_student"),
            **self._stats,
            "train_pool": float(len(rows)),
        }

    # ---- helpers --------------------------------------------------------------------------------------------------
    def _cache_path(self, round: int):
        return self.dir / f"round_{round}" / "cache.jsonl"

    def _answer(self, items: list[dict]) -> list[str]:
        prompts = [self.answer_template.format(instruction=it["prompt"]) for it in items]
        return self.teacher.generate(prompts, self.answer_tokens, self.teacher_temperature) if prompts else []

    @torch.no_grad()
    def _student(self, trainer: L.Trainer, pl_module: L.LightningModule, prompts: list[str]) -> list[str]:
        ids, mask = trainer.datamodule.prompt_batch(prompts)
        texts = pl_module.generate_text(ids, mask, self.answer_tokens, self.student_temperature)
        return [t.strip() for t in texts]


def _rouge_l(a: list[str], b: list[str]) -> float:
    """ROUGE-L F1 of two token lists: the longest common subsequence over each length, as ``rouge_score`` scores it
    (computed here on pre-tokenised text, so the pool is tokenised once)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)
