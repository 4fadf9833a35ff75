"""Checkpoints sized by what trains: the frozen parameters of the backbone (with LoRA, the whole base model) stay out
of every Lightning checkpoint and are refilled from the backbone when one is loaded, after a check that it is the same
base model (a mixin of :class:`ltune.objectives.base.Objective`)."""

from __future__ import annotations

import hashlib
import json

import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states

from ltune.backbone import unwrap

KEY = "ltune_frozen"  # the checkpoint entry: the keys left out and the base model they come from
SYSTEM_KEY = "ltune_system_prompt"  # the system message the run's prompts were rendered with
RNG_KEY = "ltune_rng"  # torch (CPU, CUDA), python and numpy RNG states at the save
VOLATILE = ("_name_or_path", "transformers_version", "torch_dtype", "dtype")  # not part of what a base model is


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
            _set_rng_states(states)
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
        checkpoint[RNG_KEY] = _collect_rng_states()  # dropout and sampling resume where they were
        state, keys = checkpoint.get("state_dict"), self._frozen_keys()
        if state is None or not keys:
            return
        keys = [k for k in keys if k in state]
        checkpoint[KEY] = {"keys": keys, "base": self.base_fingerprint(state, keys)}
        for k in keys:
            del state[k]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._trained_system = checkpoint.get(SYSTEM_KEY)
        self._resumed_rng = checkpoint.get(RNG_KEY)  # set when training starts, after the loops' own set-up
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
