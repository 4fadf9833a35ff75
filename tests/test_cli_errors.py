"""Every verb stops on a bad input with one line naming file, row, field or key and the fix, exit status 1, no
traceback; ``LTUNE_DEBUG=1`` raises the original exception instead."""

import json

import pytest

from ltune.cli import main
from ltune.datamodules import DataError
from tests.conftest import MICRO, ROOT

SFT = str(ROOT / "configs/objectives/sft.yaml")
FAST = [*MICRO, "--trainer.max_steps=1", "--trainer.logger=false", "--trainer.enable_checkpointing=false"]


def _one_line(args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    message = str(exit_info.value.code)
    assert exit_info.value.code not in (0, None) and "\n" not in message and "Traceback" not in message, message
    return message


@pytest.fixture
def bad_rows(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"prompt": "1+1", "response": "2"}, {"prompt": "2+2", "response": 4}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_fit_names_the_file_row_and_field_of_a_bad_row(bad_rows, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = _one_line(["fit", "--config", SFT, *FAST, f"--data.init_args.train={bad_rows}"])
    assert message.startswith("ltune fit: ") and f"{bad_rows}: row 2: field 'response'" in message, message


def test_missing_files_name_the_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _one_line(["fit", "--config", SFT, *FAST, "--data.init_args.train=nope.jsonl"]) == (
        "ltune fit: nope.jsonl: no such file"
    )
    assert "nope.yaml" in _one_line(["validate", "--config", "nope.yaml"])
    message = _one_line(["export", "--ckpt_path", "nope.ckpt", "--output_dir", "out"])
    assert message == f"ltune export: no such file: {tmp_path / 'nope.ckpt'}"


def test_config_errors_name_the_key_the_class_and_the_reason(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = _one_line(["fit", "--config", SFT, "--trainer.max_steps=abc"])
    assert message.startswith("ltune fit: config: \"trainer.max_steps\": Expected a <class 'int'>"), message
    ifd = str(ROOT / "configs/selection/ifd.yaml")
    message = _one_line(["select", "--config", ifd, "--data.init_args.pool.init_args.noise_fraction=2"])
    assert message.startswith(
        'ltune select: config: "data" (ltune.datamodules.IFD) > "pool" (ltune.datamodules.InstructionData): '
        "Option 'noise_fraction' is not accepted"
    ), message
    scaling = str(ROOT / "configs/selection/scaling.yaml")
    assert _one_line(["scaling", "--config", scaling, "--budgets=0.5", "--trainer.max_steps=x"]).startswith(
        'ltune scaling: config: "trainer.max_steps"'
    )


def test_a_constructors_own_error_is_the_line(tmp_path, monkeypatch):
    """An objective's ValueError (here DPO's loss weights) reaches the user, not jsonargparse's union report."""
    monkeypatch.chdir(tmp_path)
    dpo = str(ROOT / "configs/objectives/dpo.yaml")
    args = ["--model.init_args.loss_type=[sigmoid,bco_pair]", "--model.init_args.loss_weights=[1.0]"]
    message = _one_line(["fit", "--config", dpo, *FAST, *args])
    assert message.startswith("ltune fit: config: loss_weights has 1 weights for the 2 loss types"), message


def test_the_optimizer_is_the_objectives_not_lightning_clis(tmp_path, monkeypatch, capsys):
    """LightningCLI's --optimizer would apply to a module whose weights load later (an empty parameter list): not
    offered; the objective's own optimizer flags are named instead."""
    monkeypatch.chdir(tmp_path)
    message = _one_line(["fit", "--config", SFT, *FAST, "--optimizer", "SGD", "--optimizer.lr", "0.5"])
    assert "unrecognized arguments: --optimizer SGD" in message and "--model.optimizer SGD" in message, message
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    help = capsys.readouterr().out
    assert "--trainer.max_steps" in help and "\n  --optimizer " not in help and "\n  --lr_scheduler " not in help
    main(["fit", "--config", SFT, *FAST, "--model.optimizer", "SGD", "--model.optimizer.lr", "0.5"])  # trains


def test_a_model_folder_not_made_yet_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = _one_line(["validate", "--config", str(ROOT / "configs/loops/rest_em.yaml"), "--trainer.logger=false"])
    assert message.startswith("ltune validate: model folder runs/quickstart/version_0/hf does not exist"), message
    mods = ["select", "--config", str(ROOT / "configs/selection/mods.yaml"), "--trainer.logger=false"]
    message = _one_line(mods)  # the judge's folder: found missing before any row is scored
    assert message.startswith("ltune select: model folder runs/quickstart/version_0/hf does not exist"), message
    assert message.endswith("(data.reward.backbone.name_or_path)"), message
    assert not list(tmp_path.rglob("*.npz")) and not (tmp_path / "runs").exists()  # no score written, no run begun
    message = _one_line(["fit", "--config", SFT, *FAST, "--model.init_args.backbone.name_or_path=nobody/nomodel"])
    assert message.startswith("ltune fit: cannot load model 'nobody/nomodel'"), message
    (tmp_path / "runs").mkdir()  # a name whose first part is a local folder is a folder, not a Hub id
    message = _one_line(["fit", "--config", SFT, *FAST, "--model.init_args.backbone.name_or_path=runs/sft_150"])
    assert message.startswith("ltune fit: model folder runs/sft_150 does not exist"), message


def test_ltune_debug_shows_the_original_exception(bad_rows, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LTUNE_DEBUG", "1")
    with pytest.raises(DataError, match="row 2"):
        main(["fit", "--config", SFT, *FAST, f"--data.init_args.train={bad_rows}"])
