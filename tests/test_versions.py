"""``ltune env`` and the version record every run and CI log carries."""

import torch
import transformers

from ltune.cli import main
from ltune.versions import machine, stack_versions


def test_stack_versions_are_the_installed_ones_and_none_when_missing():
    found = stack_versions(("torch", "transformers", "no-such-distribution-ltune"))
    assert found == {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "no-such-distribution-ltune": None,
    }
    assert machine()["cpus"] >= 1


def test_ltune_env_prints_the_machine_and_the_stack(capsys):
    main(["env"])
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["transformers"] == transformers.__version__ and lines["torch"] == torch.__version__
    assert {"python", "platform", "cpus", "lightning", "peft", "kernels", "trl"} <= set(lines)
