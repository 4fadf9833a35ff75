"""Errors of the user's input as one line: what ``ltune`` catches (data, config, missing files or models, non-finite
losses, scoring and reward failures) and how jsonargparse's nested config report is shortened to
``key (class) > key: reason``."""

from __future__ import annotations

from jsonargparse import ArgumentError

from ltune.datamodules import DataError, ScoringError
from ltune.objectives import CheckpointMismatch, NonFiniteLossError, RewardError
from ltune.presets import ModelUnavailable


class ConfigError(ValueError):
    """A component refused the value a config gave it (raised while LightningCLI builds the classes)."""


# Errors of the user's input, not of ltune: one line naming file/row/field and the fix, no traceback
USER_ERRORS = (
    ArgumentError,
    CheckpointMismatch,
    ConfigError,
    DataError,
    FileNotFoundError,
    ModelUnavailable,
    NonFiniteLossError,
    RewardError,
    ScoringError,
)


def one_line(e: BaseException) -> str:
    """A user error as one line; jsonargparse's nested report becomes ``key (class) > key (class): reason``."""
    if isinstance(e, FileNotFoundError) and e.filename:
        return f"no such file: {e.filename}"
    raw = [line for line in str(e).splitlines() if line.strip()]
    if not isinstance(e, (ArgumentError, ConfigError)):
        return " ".join(line.strip() for line in raw)
    if isinstance(e, ConfigError):  # a constructor's own error sits at the end of the chain jsonargparse wraps
        inner = e
        while (nxt := inner.__cause__ or inner.__context__) is not None:
            inner = nxt
        if inner is not e and "Does not validate" not in str(inner):
            raw = [line for line in str(inner).splitlines() if line.strip()]
        return f"config: {raw[0].strip() if raw else type(e.__cause__).__name__} (LTUNE_DEBUG=1 shows where)"
    if len(raw) < 2:
        return "config: " + " ".join(line.strip() for line in raw)
    path, reason = raw[0].strip().rstrip(":").removeprefix("Parser key "), raw[1].strip()
    depth = lambda line: len(line) - len(line.lstrip())  # noqa: E731
    start = next((i for i, line in enumerate(raw) if line.strip().startswith("- Problem with given class_path")), None)
    if start is not None:  # follow the first subtype's nested block down to its innermost reason
        block = [raw[start]] + [line for line in raw[start + 1 :] if depth(line) > depth(raw[start])]
        for line in block[:-1]:
            text = line.strip()
            if "class_path '" in text:
                path += f" ({text.split(chr(39))[1]})"
            elif text.startswith("Parser key "):
                path += " > " + text.removeprefix("Parser key ").rstrip(":")
        reason = block[-1].strip()
        if "Does not validate" in " ".join(block[1:]):  # a nested union: its subtypes' reasons, None's left out
            reasons = [t.strip()[2:] for t in block[1:] if t.strip().startswith("- ") and "NoneType" not in t]
            given = [t.strip() for t in block if t.strip().startswith("Given value: NestedArg")]
            reason = "; ".join(reasons) + (f" (for {given[-1][13:]}: is a class_path set there?)" if given else "")
    return f"config: {path}: {reason}"
