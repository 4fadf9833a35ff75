"""Shared set-up of the selection tests: the CLI shrink flags, a five-row pool and a float64 NLL reference."""

from __future__ import annotations

import torch

from tests.conftest import MICRO

SHRINK = [
    *MICRO,
    "--trainer.max_steps=2",
    "--trainer.val_check_interval=2",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
    "--validate_around_fit=false",
    "--data.init_args.pool.init_args.train.init_args.n=60",
    "--data.init_args.pool.init_args.eval_prompts.init_args.n=4",
    "--data.init_args.progress=false",
]


ROWS = [
    {"prompt": "What is 2+3?", "response": "2+3=5. The answer is 5."},
    {"prompt": "Reverse abc.", "response": "reverse(abc)=cba. The answer is cba."},
    {"prompt": "What is 12*3?", "response": "12*3=36. The answer is 36."},
    {"prompt": "Sort the letters of dcba.", "response": "sort(dcba)=abcd. The answer is abcd."},
    {"prompt": "Which is larger, 4 or 9?", "response": "zz"},
]


def reference_nll(model, tok, context: str | list[int], answer: str) -> float:
    """Mean NLL (float64, one row, full logits) of the answer's byte tokens + EOS after ``context``."""
    ctx = tok(context, add_special_tokens=False)["input_ids"] if isinstance(context, str) else context
    ans = tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = torch.tensor([ctx + ans])
    with torch.no_grad():
        logp = model(ids).logits.double().log_softmax(-1)[0]
    return -sum(logp[len(ctx) + t - 1, a].item() for t, a in enumerate(ans)) / len(ans)
