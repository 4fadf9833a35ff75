"""The data-selection verbs of the ``ltune`` command: ``select`` (a selection strategy alone, its kept rows as jsonl)
and ``scaling`` (the instruction-data scaling study, one fit per budget). They read a fit config as ``fit`` does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ltune.cli import LTuneCLI, _cli, _validate
from ltune.io import atomic_write_text


class SelectCLI(LTuneCLI):
    """``ltune select``: a fit config's arguments plus ``--output``."""

    verb = ("select",)

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        help = "jsonl of the kept source rows (default: <log dir>/selection/selected.jsonl)"
        parser.add_argument("--output", type=str | None, default=None, help=help)


def budget_list(value: str) -> list[int | float]:
    """``"0.1,0.2,500"`` -> ``[0.1, 0.2, 500]``: a float is a fraction of the pool, an int a number of rows."""
    return [
        float(v) if "." in v or "e" in v.lower() else int(v) for v in str(value).strip("[]").split(",") if v.strip()
    ]


class ScalingCLI(LTuneCLI):
    """``ltune scaling``: a fit config's arguments plus ``--budgets`` and ``--output``."""

    verb = ("scaling",)

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        help = "comma-separated budgets: 0.1 is a fraction of the pool, 500 a number of rows"
        parser.add_argument("--budgets", type=budget_list, default=[0.1, 0.2, 0.5, 1.0], help=help)
        parser.add_argument("--output", type=str, default="runs/scaling", help="folder of scaling.csv/.png")


def select(argv: list[str]) -> str:
    """Run the selection of a fit config (``--data`` a ``Selection``) alone and write the kept source rows as jsonl.

    ``--output PATH`` (default ``<log dir>/selection/selected.jsonl``); every other argument is read as by ``fit``.
    """
    from ltune.datamodules.selection import Selection
    from ltune.datamodules.sources import as_source

    cli = _cli(SelectCLI, argv, run=False)
    data = cli.datamodule
    if not isinstance(data, Selection):
        raise SystemExit(f"ltune select: --data must be a selection strategy, got {type(data).__name__}")
    data.trainer = cli.trainer
    data.adopt(cli.model)
    data.select()
    output = cli.config["output"]
    out = Path(output) if output else data.output_dir() / "selected.jsonl"
    rows = as_source(data.pool.sources["train"]).load()
    atomic_write_text(out, "".join(json.dumps(rows[i], ensure_ascii=False, default=str) + "\n" for i in data.selected))
    print(f"selected {len(data.selected)} of {len(rows)} rows -> {out}")
    return str(out)


def scaling(argv: list[str]) -> list[dict]:
    """The instruction-data scaling study (Ji et al., 2023): one fit per budget of a ``Subset`` config (nested random
    subsets), held-out exact match per category after each, and ``scaling.csv`` / ``scaling.png`` in ``--output``.

    Each finished budget is written to ``<output>/budgets/<budget>.json`` with a fingerprint of its whole config; a
    rerun after a kill reuses the budgets whose fingerprint matches and fits only the rest.
    """
    from ltune.datamodules.selection import Subset
    from ltune.datamodules.selection.report import write_scaling_report

    first = _cli(ScalingCLI, argv, run=False)  # reads --budgets and --output (and checks the config) once
    budgets, out = first.config["budgets"], first.config["output"]
    records = []
    for budget in budgets:
        cli = _cli(
            ScalingCLI, [*argv, f"--data.init_args.budget={budget}"], run=False, save_config_kwargs={"overwrite": True}
        )
        if not isinstance(cli.datamodule, Subset):
            raise SystemExit(
                f"ltune scaling: --data must be ltune.datamodules.Subset, got {type(cli.datamodule).__name__}"
            )
        config = {k: v for k, v in cli.config.as_dict().items() if k not in ("budgets", "output")}
        key = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]
        done = Path(out) / "budgets" / f"{budget}.json"
        if done.is_file() and (saved := json.loads(done.read_text()))["key"] == key:
            print(f"budget {budget}: reusing {done}")
            records += saved["records"]
            continue
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        found = []
        for metric, value in _validate(cli).items():
            if metric.startswith("val/exact_match"):
                category = metric.removeprefix("val/exact_match").lstrip("/") or "all"
                rows = len(cli.datamodule.selected)
                found.append({"budget": float(budget), "rows": rows, "category": category, "exact_match": value})
        atomic_write_text(done, json.dumps({"key": key, "records": found}, indent=1))
        records += found
    csv, png = write_scaling_report(records, out)
    print(f"scaling study over budgets {budgets}: {csv}, {png}")
    return records
