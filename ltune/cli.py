"""The ``ltune`` command: LightningCLI (fit/validate/test/predict) plus the ``export`` verb.

ltune fit --config configs/quickstart.yaml
ltune export --config runs/quickstart/version_0/config.yaml --ckpt_path <ckpt> --output_dir hf_model
"""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI

import ltune.callbacks  # noqa: F401  (short class names in configs)
import ltune.datamodules  # noqa: F401
from ltune.datamodules.base import LTuneData
from ltune.objectives.base import Objective


class LTuneCLI(LightningCLI):
    """LightningCLI with subclass mode for ``--model`` (an objective) and ``--data`` (a DataModule)."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--validate_around_fit",
            type=bool,
            default=False,
            help="Run validation before and after fit and print how the validation metrics moved.",
        )

    def before_fit(self) -> None:
        self._before = self._validate() if self.config[self.subcommand]["validate_around_fit"] else None

    def after_fit(self) -> None:
        if self._before is None or self.trainer.interrupted:
            return
        after = self._validate()
        if self.trainer.is_global_zero:
            print("\nvalidation before -> after fit:")
            for key in sorted(after):
                print(f"  {key:32s} {self._before.get(key, float('nan')):8.4f} -> {after[key]:8.4f}")

    def _validate(self) -> dict[str, float]:
        out = self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)
        return {k: float(v) for d in out for k, v in d.items()}


def export(ckpt_path: str, output_dir: str, merge_lora: bool = True) -> None:
    """Write a Hugging Face folder (weights, config, tokenizer) from a checkpoint of an ltune run.

    Args:
        ckpt_path: A Lightning checkpoint; its hyperparameters rebuild the backbone (no config needed).
        output_dir: Destination folder for ``save_pretrained``.
        merge_lora: Merge a LoRA adapter into the weights (otherwise the adapter alone is written).
    """
    model = Objective.load_from_checkpoint(ckpt_path, map_location="cpu")
    model.export(output_dir, merge_lora=merge_lora)
    print(f"exported {ckpt_path} -> {output_dir}")


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["export"]:
        from jsonargparse import CLI

        CLI(export, args=argv[1:], as_positional=False)
        return
    LTuneCLI(
        Objective,
        LTuneData,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
