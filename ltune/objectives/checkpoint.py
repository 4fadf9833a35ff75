"""Checkpoints sized by what trains: the frozen parameters of the backbone (with LoRA, the whole base model) stay out
of every Lightning checkpoint and are refilled from the backbone when one is loaded, after a check that it is the same
base model (a mixin of :class:`ltune.objectives.base.Objective`)."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import torch

from ltune.forward import unwrap

KEY = "ltune_frozen"  # the checkpoint entry: the keys left out and the base model they come from
SYSTEM_KEY = "ltune_system_prompt"  # the system message the run's prompts were rendered with
RNG_KEY = "ltune_rng"  # each rank's torch (CPU, its CUDA device), python and numpy RNG states at the save
VOLATILE = ("_name_or_path", "transformers_version", "torch_dtype", "dtype")  # not part of what a base model is


def rng_states(device: torch.device) -> dict:
    """This process's RNG states (torch CPU, ``device``'s CUDA generator, python, numpy) in types that
    ``torch.load(weights_only=True)`` reads."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def per_rank(value: object) -> list:
    """``value`` of every rank, in rank order (all ranks call it: every rank builds a checkpoint, rank 0 writes it)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [value]
    values = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(values, value)
    return values


def set_rng_states(states: dict, device: torch.device) -> None:
    """Restore what :func:`rng_states` saved."""
    torch.set_rng_state(states["torch"])
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in states["python"]))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


class CheckpointMismatch(ValueError):
    """A checkpoint saved over another base model than the one this run loads."""


class FrozenOutOfCheckpoint:
    """``on_save_checkpoint`` / ``on_load_checkpoint`` that leave frozen backbone parameters out and refill them.

    Left out: every parameter of ``self.model`` that does not train (a tied embedding under each of its names). Kept:
    what trains, buffers, the optimizer and schedule, the loops' state. The ``tiny`` preset keeps everything (its base
    is a random initialisation, nothing to reload from), and so does FSDP2 (sharded state).
    """

    def on_train_start(self) -> None:
        states = getattr(self, "_resumed_rng", None)
        if states is not None:
            set_rng_states(states, self.device)
            self._resumed_rng = None

    def _frozen_keys(self) -> list[str]:
        if self.model is None or self.backbone.is_tiny or self.device_mesh is not None:
            return []
        return [f"model.{n}" for n, p in self.model.named_parameters(remove_duplicate=False) if not p.requires_grad]

    def base_fingerprint(self, state: dict[str, torch.Tensor], keys: list[str]) -> dict:
        """What identifies the base model: its name, a hash of its config, and a checksum of the left-out values
        (the first 64 of each tensor, float64), which tells two checkpoints of one architecture apart."""
        config = {k: v for k, v in unwrap(self.model).config.to_dict().items() if k not in VOLATILE}
        digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
        checksum = sum(float(state[k].detach().flatten()[:64].double().sum()) for k in keys)
        return {"name_or_path": self.backbone.name_or_path, "config": digest, "checksum": checksum}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[SYSTEM_KEY] = self.trained_system_prompt()  # what an export's chat template must insert
        checkpoint[RNG_KEY] = per_rank(rng_states(self.device))  # dropout and sampling resume where they were
        state, keys = checkpoint.get("state_dict"), self._frozen_keys()
        if state is None or not keys:
            return
        keys = [k for k in keys if k in state]
        checkpoint[KEY] = {"keys": keys, "base": self.base_fingerprint(state, keys)}
        for k in keys:
            del state[k]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._trained_system = checkpoint.get(SYSTEM_KEY)
        states = checkpoint.get(RNG_KEY)  # this rank's, set when training starts (after the loops' own set-up)
        self._resumed_rng = states[self.global_rank % len(states)] if states else None
        saved = checkpoint.get(KEY)
        if not saved:
            return
        current = self.state_dict()
        missing = [k for k in saved["keys"] if k not in current]
        mine = None if missing else self.base_fingerprint(current, saved["keys"])
        theirs = saved["base"]
        if mine is None or mine["config"] != theirs["config"] or abs(mine["checksum"] - theirs["checksum"]) > 1e-9:
            raise CheckpointMismatch(
                f"the checkpoint was saved over another base model ({theirs['name_or_path']}, config "
                f"{theirs['config']}) than this run loads ({self.backbone.name_or_path}, config "
                f"{mine['config'] if mine else 'without ' + missing[0]}): its frozen weights are not stored, so resume "
                "or export it with the backbone it trained (name_or_path, revision, dtype)"
            )
        checkpoint["state_dict"].update({k: current[k] for k in saved["keys"]})
