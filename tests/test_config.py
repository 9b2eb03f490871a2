from dataclasses import dataclass
from typing import Optional

import pytest

from biopost.config import F, ConfigError, coerce, from_dict, parse_bool, parse_config, save_config, load_yaml


@dataclass
class Cfg:
    lr: float = F(1e-4, "learning rate")
    epochs: int = F(1, "epochs")
    use_x: bool = F(True, "a boolean")
    name: Optional[str] = F(None, "optional")
    targets: list = F(["a", "b"], "a list")
    cell: dict = F({}, "json")


@pytest.mark.parametrize("text,value", [("false", False), ("False", False), ("0", False), ("no", False),
                                        ("true", True), ("YES", True), ("1", True), ("on", True)])
def test_bool_flags_parse_words_not_truthiness(text, value):
    cfg = parse_config(Cfg, ["--use_x", text])
    assert cfg.use_x is value


def test_bare_bool_flag_is_true():
    assert parse_config(Cfg, ["--use_x", "false"]).use_x is False
    cfg = parse_config(Cfg, ["--use_x", "--epochs", "3"])
    assert cfg.use_x is True and cfg.epochs == 3


def test_bad_bool_is_an_error():
    with pytest.raises(ConfigError, match="use_x.*boolean"):
        coerce("maybe", bool, "use_x")
    with pytest.raises(SystemExit):
        parse_config(Cfg, ["--use_x", "maybe"])


def test_yaml_then_cli_precedence_and_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 3.0e-4\nepochs: 2\nuse_x: false\ntargets: [q, k]\ncell: {a: 1}\n")
    cfg = parse_config(Cfg, ["--config", str(path), "--epochs", "5", "--name", "run"])
    assert (cfg.lr, cfg.epochs, cfg.use_x, cfg.targets, cfg.cell, cfg.name) == (3e-4, 5, False, ["q", "k"], {"a": 1}, "run")
    assert parse_config(Cfg, ["--targets", "x,y,z", "--cell", '{"b": 2}']).targets == ["x", "y", "z"]


def test_unknown_yaml_key_is_an_error_naming_it(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\nlearnin_rate: 5\n")
    with pytest.raises(SystemExit):
        parse_config(Cfg, ["--config", str(path)])
    err = capsys.readouterr().err
    assert "learnin_rate" in err and str(path) in err


def test_unknown_cli_flag_is_an_error(capsys):
    with pytest.raises(SystemExit):
        parse_config(Cfg, ["--epoch", "3"])  # no abbreviations either
    assert "--epoch" in capsys.readouterr().err


def test_type_errors_name_the_key():
    with pytest.raises(ConfigError, match="epochs"):
        from_dict(Cfg, {"epochs": "two"})
    with pytest.raises(ConfigError, match="epochs"):
        from_dict(Cfg, {"epochs": 1.5})
    assert parse_bool("False") is False


def test_mutable_defaults_are_not_shared():
    a, b = Cfg(), Cfg()
    a.targets.append("c")
    assert b.targets == ["a", "b"]


def test_save_config_round_trips(tmp_path):
    cfg = parse_config(Cfg, ["--lr", "2e-5", "--use_x", "false"])
    save_config(cfg, tmp_path / "config.yaml", extra={"stage": "sft"})
    data = load_yaml(tmp_path / "config.yaml")
    assert data["stage"] == "sft" and data["use_x"] is False and data["lr"] == 2e-5
