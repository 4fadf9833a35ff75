"""Every documented command runs: each ``ltune ...`` line of a config's header comment and of README.md's ```bash
blocks is executed, in the order written (``\\`` continuations joined, ``cmd1 && cmd2`` chains in sequence), from a
clean working directory holding only ``configs/`` and ``examples/`` (one folder per config header, one for the README).

A command runs for real when it can offline on CPU: its merged config is its own ``--print_config`` output, shrunk
generically (:func:`shrink`: few steps, few rows, the micro ``tiny`` shape, 1-2 rounds; loggers and exports kept, so
later commands read what earlier ones wrote), then ``ltune <verb> --config reduced.yaml``. So every run also checks
that a printed config loads back (README: "a full, editable config"). A command is only parsed
(``--print_config``) when it needs what a test cannot have: a placeholder (``<labeler>``, ``...``) that no earlier
command resolved, a Hub id or a user file that does not exist, a GPU or several processes, or the real model (the
real tier, ``tests/real/``, runs those). ``<ckpt>``-style placeholders inside a folder an earlier command wrote are
resolved to the single file there, so chains such as ``fit && export --ckpt_path .../<ckpt>`` then ``fit
--model...name_or_path <export>`` run whole.
"""

from __future__ import annotations

import contextlib
import glob
import io
import re
import shlex
from pathlib import Path

import pytest
import yaml

from ltune.cli import main
from ltune.presets import PRESETS
from tests.conftest import ROOT

MICRO_TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64}
OUTPUT_FLAGS = {"--output", "--output_dir", "--out", ">"}  # the value after these is written, not read
DATA_FILE = re.compile(r"\.(jsonl|json|csv|parquet)$")
PATH_LIKE = re.compile(r"(?<![\w.:/-])[\w.-]+(?:/[\w.<>-]+)+")  # a/b[/c...]: a path or a Hub id
PLACEHOLDER = re.compile(r"<[^<>]+>")
VALUE_FOR = {"<train_pool>": "100"}  # placeholders of typed (non-string) arguments, for the parse check


def shell_commands(lines: list[str], prose: bool = False) -> list[list[str]]:
    """The commands of shell lines as argv lists: ``\\`` continuations joined, comments dropped, ``&&`` / ``;``
    chains split; with ``prose`` (a comment block) only the lines that start with ``ltune``. Shell blocks must be
    valid shell, so a continuation broken by a comment after the backslash (the next line would run as its own
    command) fails here."""
    logical, pending = [], ""
    for line in lines:
        if line.rstrip("\n").endswith("\\"):
            pending += line[:-1] + " "
        else:
            logical.append(pending + line)
            pending = ""
    assert not pending, f"a continuation runs past the block: {pending!r}"
    commands = []
    for line in logical:
        if prose and not line.lstrip().startswith("ltune "):
            continue
        line = PLACEHOLDER.sub(lambda m: m[0].replace(" ", "_"), line)  # `<seed-0 base hf>`: one word
        lexer = shlex.shlex(line, posix=True, punctuation_chars="&|;")
        lexer.whitespace_split = True
        command: list[str] = []
        for token in [*lexer, "&&"]:
            if token in ("&&", "||", ";"):
                if command:
                    commands.append(command)
                command = []
            else:
                command.append(token)
    for command in commands:
        assert not command[0].startswith("-"), f"a flag line runs as a command (broken `\\` continuation): {command}"
        assert all(t.strip() for t in command), f"an escaped space (comment after `\\`?) in {command}"
    return commands


def header(config: Path) -> list[str]:
    """The first comment block of a config, ``#`` removed."""
    lines = []
    for line in config.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:])
    return lines


def readme_bash() -> list[str]:
    """The lines of README.md's ```bash blocks, in order."""
    lines, inside = [], False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.strip().startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside:
            lines.append(line)
    return lines


def ltune_commands(source: str) -> list[list[str]]:
    """The ``ltune`` commands (argv after ``ltune``) of a source; other programs (pip, python, pytest) skipped."""
    if source == "README.md":
        return [c[1:] for c in shell_commands(readme_bash()) if c[0] == "ltune"]
    return [c[1:] for c in shell_commands(header(ROOT / source), prose=True) if c[0] == "ltune"]


SOURCES = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "configs").rglob("*.yaml"))] + ["README.md"]


def test_every_config_and_the_readme_document_commands():
    assert all(ltune_commands(source) for source in SOURCES)


# ---------------------------------------------------------------------------------------------------- resolution


def resolve(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` with placeholders that an earlier command resolved (a single file in a folder it wrote), and why the
    command can only be parsed here (None when it can run)."""
    out, why = [], None
    for i, token in enumerate(argv):
        if token == "...":
            why = why or "placeholder `...`"
            continue
        for marker in PLACEHOLDER.findall(token):
            found = glob.glob(token.replace(marker, "*")) if "/" in token.split(marker)[0] else []
            if len(found) == 1:
                token = found[0]
            else:
                why = why or f"placeholder {marker}"
                token = token.replace(marker, VALUE_FOR.get(marker, "placeholder"))
        if i == 0 or argv[i - 1] not in OUTPUT_FLAGS:
            why = why or external(token)
        out.append(token)
    return out, why


def external(token: str) -> str | None:
    """Why a read argument needs something from outside the working folder: a Hub id or a user file not there."""
    for path in [*PATH_LIKE.findall(token), *([token] if DATA_FILE.search(token) else [])]:
        first = path.split("/")[0]
        if first == "runs":  # ltune's own output folder: the documented chain must have written it
            continue
        if not Path(first).exists():
            return f"{path} is a Hub id or a user file"
    return None


def needs_outside(cfg: dict) -> str | None:
    """Why a merged config cannot run here: a GPU or several processes, the real model, a Hub model."""
    trainer = cfg.get("trainer") or {}
    if str(trainer.get("accelerator")) not in ("cpu", "auto", "None"):
        return f"accelerator {trainer['accelerator']}"
    if str(trainer.get("devices")) not in ("1", "auto", "None"):
        return f"devices {trainer['devices']} (several processes)"
    for value in walk(cfg):
        name = value.get("name_or_path")
        if name in PRESETS:
            return f"the real model {name} (tests/real/)"
        if isinstance(name, str) and external(name):
            return f"Hub model {name}"
    return None


def walk(node):
    """Every dict in a config, depth first."""
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


# ------------------------------------------------------------------------------------------------------ shrinking

ROWS = {"eval_prompts": 4, "val": 4, "target": 6}  # EmbeddedTasks rows by where they hang (default 32; pools 64)
AT_MOST = {  # argument name -> largest value kept (the generation, sampling, selection and round sizes)
    "max_steps": 3, "max_epochs": 2, "log_every_n_steps": 1, "batch_size": 8, "eval_batch_size": 8,
    "score_batch_size": 16, "max_new_tokens": 40, "max_completion_length": 12, "answer_tokens": 40,
    "instruction_tokens": 12, "num_samples": 4, "num_generations": 2, "num_votes": 4, "max_solutions": 2,
    "rounds": 2, "epochs_per_round": 1, "num_new": 8, "chunk_size": 8, "budget": 8, "augment_size": 8,
    "clusters": 4, "per_cluster": 3, "projection_dim": 64,
}  # fmt: skip


def shrink(node, key: str = ""):
    """A merged config shrunk to seconds, in place; loggers, callbacks and every path kept."""
    if isinstance(node, list):
        for v in node:
            shrink(v, key)
        return node
    if not isinstance(node, dict):
        return node
    if node.get("class_path") == "ltune.datamodules.EmbeddedTasks":
        args = node["init_args"]
        args["n"] = min(args["n"], ROWS.get(key, 64 if args.get("format") == "pool" else 32))
    if node.get("name_or_path") == "tiny" and isinstance(node.get("tiny"), dict):
        node["tiny"].update(MICRO_TINY)
    for k, v in node.items():
        if k in AT_MOST and isinstance(v, int) and not isinstance(v, bool) and v > AT_MOST[k]:
            node[k] = AT_MOST[k]
        else:
            shrink(v, k)
    return node


# Where a chain's later step needs a base that already does something, the chain's own quickstart step trains longer
# in the reduced run: 200 micro steps at batch 32 (~15 s; the full command trains 1200 tiny steps).
TRAINED_BASE = {
    # ReST-EM keeps only verified solutions: after 3 micro steps the base solves none of its problems (the E-step stops
    # with "produced no training rows"); after 200 it solves ~70% of them at least once (pass rate ~0.23).
    "configs/loops/rest_em.yaml": {"trainer.max_steps": 200, "data.init_args.batch_size": 32},
    # MoDS keeps rows its LM judge rates above alpha 0: a 3-step judge rates every row below it, as an untrained one.
    "configs/selection/mods.yaml": {"trainer.max_steps": 200, "data.init_args.batch_size": 32},
}


def shrink_run(cfg: dict) -> dict:
    """:func:`shrink` plus the run-level settings: no validation around fit, quiet, validation at the last step."""
    shrink(cfg)
    cfg["validate_around_fit"] = False
    trainer = cfg.setdefault("trainer", {})
    trainer.update(enable_progress_bar=False, enable_model_summary=False)
    steps, interval = trainer.get("max_steps"), trainer.get("val_check_interval")
    if isinstance(interval, int) and isinstance(steps, int) and steps > 0:
        trainer["val_check_interval"] = min(interval, steps)
    return cfg


# -------------------------------------------------------------------------------------------------------- running


def ltune(argv: list[str]) -> str:
    """``ltune <argv>`` in-process; its stdout. A one-line user error (``SystemExit`` with a message) fails."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)  # verbs such as select and export return instead of exiting
    assert exit_info.value.code in (0, None), f"ltune {shlex.join(argv)}: {exit_info.value.code}"
    return out.getvalue()


def execute(source: str, argv: list[str], step: int) -> str:
    """Run one documented command (shrunk), or parse it; returns "ran" or "parsed: <why>"."""
    redirect = argv[argv.index(">") + 1] if ">" in argv else None
    argv, why = resolve(argv[: argv.index(">")] if redirect else argv)
    verb = argv[0]
    if verb == "fetch":
        why = why or "downloads the real model (tests/real/)"
    if "--print_config" in argv:  # a documented print: run as written
        text = ltune(argv)
        if redirect:
            Path(redirect).write_text(text)
        return "ran"
    if why is None and verb in ("fit", "validate", "test", "predict", "select", "scaling"):
        cfg = yaml.safe_load(ltune([*argv, "--print_config"]))
        why = needs_outside(cfg)
        if why is None:
            shrink_run(cfg)
            if "configs/quickstart.yaml" in argv:
                for dotted, value in TRAINED_BASE.get(source, {}).items():
                    *parents, last = dotted.split(".")
                    node = cfg
                    for k in parents:
                        node = node[k]
                    node[last] = value
            Path(f"reduced_{step}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            ltune([verb, "--config", f"reduced_{step}.yaml"])
    elif why is None:  # export: cheap as written
        ltune(argv)
    if why is not None:
        ltune([*argv, "--print_config"])
        return f"parsed: {why}"
    for flag in ("--output", "--output_dir"):  # what the command says it writes is there
        if flag in argv:
            assert Path(argv[argv.index(flag) + 1]).exists(), f"ltune {shlex.join(argv)} wrote no {flag}"
    return "ran"


def test_a_printed_config_keeps_its_sources(tmp_path, monkeypatch):
    """README: ``--print_config > my.yaml`` is "a full, editable config" (and a run's config.yaml replays it). A
    ``Source`` in a ``str | Path | Source`` argument was printed as the string "Namespace(class_path=...)", which
    then loaded as a Hub id; sources must stay class_path blocks, optional (data) or not (ReST-EM's problems)."""
    monkeypatch.chdir(tmp_path)
    printed = ltune(["fit", "--config", str(ROOT / "configs/loops/rest_em.yaml"), "--print_config"])
    cfg = yaml.safe_load(printed)
    assert cfg["data"]["init_args"]["eval_prompts"]["class_path"] == "ltune.datamodules.EmbeddedTasks"
    assert cfg["trainer"]["callbacks"][0]["init_args"]["problems"]["init_args"]["n"] == 400
    Path("my.yaml").write_text(printed)
    assert ltune(["fit", "--config", "my.yaml", "--print_config"]) == printed


@pytest.mark.slow
@pytest.mark.parametrize("source", SOURCES)
def test_documented_commands_run(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # the shipped example data configs/data/ names
    for step, argv in enumerate(ltune_commands(source)):
        print(f"ltune {shlex.join(argv)}: {execute(source, argv, step)}")  # shown with a failure: what ran before
