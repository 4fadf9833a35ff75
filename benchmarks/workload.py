"""A length-realistic chat workload for the speed and memory benchmarks: seeded, generated here (no public corpus),
with token lengths (under the model's tokenizer and chat template) that follow a long-tailed distribution from ~50 to
4,096 tokens, in TRL's layouts so both sides of a comparison read the same rows.

- ``sft``: multi-turn ``messages`` (1-4 user/assistant exchanges); a row's rendered length is drawn log-normal
  (median ``--median``, sigma ``--sigma``), clipped to [50, ``--max-tokens``]; about 30% of each exchange is the user's.
- ``pairs``: ``prompt`` / ``chosen`` / ``rejected`` (DPO, ORPO): a long shared prompt (its own log-normal draw) and two
  responses of different drawn lengths; prompt + the longer response fits ``--max-tokens``.
- ``prompts``: ``prompt`` rows of 100-1,000 tokens (log-uniform), for GRPO.
- ``--exact L`` (sft, pairs): every row, or every pair's prompt and longer response, about ``L`` tokens instead (half
  of a pair's the prompt, the other response half as long; an SFT row up to ~40 over, its turns' role headers): the
  memory-against-length benchmark's rows.

Text is sentences of words drawn (Zipf-weighted, seeded) from the tokenizer's own word pieces, cut to the drawn token
count. The summary (row count, token quantiles, prompt share) is printed and written next to the rows.

    python benchmarks/workload.py sft --rows 64 --out /tmp/sft.jsonl
    python benchmarks/workload.py pairs --rows 32 --out /tmp/pairs.jsonl
    python benchmarks/workload.py prompts --rows 16 --out /tmp/prompts.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Writer:
    """Seeded text of an exact token length under a tokenizer."""

    def __init__(self, tokenizer, seed: int) -> None:
        self.tok, self.rng = tokenizer, np.random.default_rng(seed)
        vocab = sorted(
            t[1:] for t in tokenizer.get_vocab() if t.startswith("Ġ") and t[1:].isalpha() and t[1:].islower()
        )
        self.words = list(self.rng.permutation([w for w in vocab if 2 <= len(w) <= 10]))  # Zipf rank: seeded
        weights = 1.0 / np.arange(1, len(self.words) + 1) ** 1.1  # Zipf: a few words common, most rare
        self.p = weights / weights.sum()

    def text(self, tokens: int) -> str:
        """About ``tokens`` tokens of sentences (exactly ``tokens`` on their own, cut at a token boundary)."""
        words = self.rng.choice(self.words, size=int(tokens * 1.3) + 8, p=self.p)
        sentences, i = [], 0
        while i < len(words):
            n = int(self.rng.integers(6, 20))
            sentences.append(" ".join(words[i : i + n]).capitalize() + ".")
            i += n
        ids = self.tok(" ".join(sentences), add_special_tokens=False)["input_ids"][:tokens]
        return self.tok.decode(ids).strip()

    def lengths(self, n: int, median: float, sigma: float, low: int, high: int) -> np.ndarray:
        return np.clip(self.rng.lognormal(np.log(median), sigma, n), low, high).astype(int)


def rendered_tokens(tok, messages: list[dict]) -> int:
    """Tokens of messages rendered by the chat template (its default system prompt included)."""
    return len(tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"])


def sft_rows(w: Writer, n: int, median: float, sigma: float, max_tokens: int, exact: int | None = None) -> list[dict]:
    rows = []
    for total in [exact] * n if exact else w.lengths(n, median, sigma, 50, max_tokens):
        turns = int(w.rng.integers(1, 5))
        per = max(total - 30, 16) / turns  # about 30 tokens of template and system prompt
        messages = []
        for _ in range(turns):
            user = max(int(per * w.rng.uniform(0.15, 0.45)), 4)
            messages += [
                {"role": "user", "content": w.text(user)},
                {"role": "assistant", "content": w.text(int(per) - user)},
            ]
        while rendered_tokens(w.tok, messages) > max_tokens:  # the template's tokens on top: trim the last reply
            messages[-1]["content"] = w.tok.decode(w.tok(messages[-1]["content"])["input_ids"][:-32]).strip()
        rows.append({"messages": messages})
    return rows


def pair_rows(w: Writer, n: int, median: float, sigma: float, max_tokens: int, exact: int | None = None) -> list[dict]:
    if exact:  # the chat template adds about 30 tokens around the prompt
        p, a = exact // 2 - 30, exact - exact // 2
        return [{"prompt": w.text(p), "chosen": w.text(a), "rejected": w.text(a // 2)} for _ in range(n)]
    rows = []
    prompts = w.lengths(n, median, sigma, 30, max_tokens // 2)
    for p in prompts:
        a, b = w.lengths(2, median / 2, sigma, 10, max_tokens - int(p) - 40)
        rows.append({"prompt": w.text(int(p)), "chosen": w.text(int(a)), "rejected": w.text(int(b))})
    return rows


def prompt_rows(w: Writer, n: int) -> list[dict]:
    return [{"prompt": w.text(int(t))} for t in np.exp(w.rng.uniform(np.log(100), np.log(1000), n))]


def summary(tok, kind: str, rows: list[dict]) -> dict:
    """Rendered token counts (chat template included) and their quantiles; the prompt's share of a row's tokens."""
    if kind == "sft":
        total = [rendered_tokens(tok, r["messages"]) for r in rows]
        prompt = [rendered_tokens(tok, [m for m in r["messages"] if m["role"] == "user"]) for r in rows]
    elif kind == "pairs":
        prompt = [rendered_tokens(tok, [{"role": "user", "content": r["prompt"]}]) for r in rows]
        total = [p + len(tok(max(r["chosen"], r["rejected"], key=len))["input_ids"]) for p, r in zip(prompt, rows)]
    else:
        total = prompt = [rendered_tokens(tok, [{"role": "user", "content": r["prompt"]}]) for r in rows]
    q = np.quantile(total, [0, 0.1, 0.5, 0.9, 0.99, 1]).round().astype(int).tolist()
    share = float(np.sum(prompt) / np.sum(total))
    return {
        "kind": kind,
        "rows": len(rows),
        "tokens": int(np.sum(total)),
        "quantiles": dict(zip(["min", "p10", "p50", "p90", "p99", "max"], q)),
        "prompt_share": round(share, 3),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["sft", "pairs", "prompts"])
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="smollm2-135m-instruct", help="its tokenizer and chat template measure length")
    p.add_argument("--median", type=float, default=400, help="median rendered tokens of a row (sft) or prompt (pairs)")
    p.add_argument("--sigma", type=float, default=1.0, help="log-normal sigma: the tail's weight")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exact", type=int, help="sft, pairs: every row (pair) about this many tokens")
    a = p.parse_args(argv)
    from ltune.backbone import Backbone

    tok = Backbone(a.model).tokenizer
    w = Writer(tok, a.seed)
    if a.kind == "sft":
        rows = sft_rows(w, a.rows, a.median, a.sigma, a.max_tokens, a.exact)
    elif a.kind == "pairs":
        rows = pair_rows(w, a.rows, a.median, a.sigma, a.max_tokens, a.exact)
    else:
        rows = prompt_rows(w, a.rows)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    info = {**summary(tok, a.kind, rows), "args": vars(a)}
    Path(a.out).with_suffix(".summary.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info))
    return info


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
