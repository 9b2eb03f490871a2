"""Stage configs: plain dataclasses, a YAML file (`--config`) and command-line overrides.

Precedence: dataclass defaults < YAML file < command line. Every field is a flag of the same
name (`--learning_rate 1e-4`). Booleans accept true/false/yes/no/on/off/1/0 (so
`--flag false` is False, unlike argparse's `type=bool`), and a bare `--flag` means true.
Unknown keys, in the YAML file or on the command line, are errors that name the key.

This module imports neither torch nor transformers: sweeps use it on login nodes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path

import yaml

_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}
_NONE = {"none", "null", "~", ""}


class ConfigError(ValueError):
    """A bad config value or key; the message names where it came from."""


def F(default, help: str = "", **kw):
    """A dataclass field with help text (mutable defaults are copied per instance)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: json.loads(json.dumps(d)),
                                 metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def parse_bool(value, where: str = "value") -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{where}: expected a boolean (true/false/yes/no/1/0), got {value!r}")


def _unwrap_optional(tp):
    """Optional[X] -> (X, True); X -> (X, False)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0], True
    return tp, False


def coerce(value, tp, where: str):
    """Convert a YAML or command-line value to the field's annotated type."""
    inner, optional = _unwrap_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NONE):
        if optional:
            return None
        raise ConfigError(f"{where}: a value is required (got {value!r})")
    origin = typing.get_origin(inner)
    try:
        if inner is bool:
            return parse_bool(value, where)
        if inner is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, str):
                text = value.strip()
                return int(float(text)) if ("e" in text.lower() and float(text).is_integer()) else int(text)
            return int(value)
        if inner is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if inner is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if origin is list or inner is list:
            (item_tp,) = typing.get_args(inner) or (str,)
            if isinstance(value, str):
                text = value.strip()
                if text.startswith("["):
                    value = json.loads(text)
                else:
                    value = [v.strip() for v in text.split(",") if v.strip()]
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return [coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        if origin is dict or inner is dict:
            if isinstance(value, str):
                value = json.loads(value) if value.strip() else {}
            if not isinstance(value, dict):
                raise ValueError
            return dict(value)
        if inner is typing.Any:
            return value
    except ConfigError:
        raise
    except (ValueError, TypeError, json.JSONDecodeError):
        pass
    else:
        raise ConfigError(f"{where}: unsupported field type {inner!r}")
    raise ConfigError(f"{where}: expected {getattr(inner, '__name__', inner)}, got {value!r}")


def field_types(cls) -> dict:
    return typing.get_type_hints(cls)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    return data


def from_dict(cls, data: dict, where: str = "config"):
    """Build `cls` from a mapping, validating keys and types."""
    types_ = field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in types_]
    if unknown:
        close = {k: [n for n in names if n.replace("_", "") == k.replace("_", "").replace("-", "")] for k in unknown}
        hints = "".join(f" (did you mean {close[k][0]!r}?)" for k in unknown if close[k])
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} for {cls.__name__}{hints}")
    values = {k: coerce(v, types_[k], f"{where}: {k}") for k, v in data.items()}
    return cls(**values)


def build_parser(cls, prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description, allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML file of config keys (command-line flags override it)")
    types_ = field_types(cls)
    for f in dataclasses.fields(cls):
        inner, _ = _unwrap_optional(types_[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_ = f.metadata.get("help", "") or " "
        if inner is bool:
            # nargs="?" so that a bare `--flag` is True and `--flag false` is False.
            parser.add_argument(f"--{f.name}", nargs="?", const="true", default=argparse.SUPPRESS,
                                metavar="BOOL", help=f"{help_} (default: {default})")
        else:
            parser.add_argument(f"--{f.name}", default=argparse.SUPPRESS, metavar=_metavar(inner),
                                help=f"{help_} (default: {default})")
    return parser


def _metavar(tp) -> str:
    if typing.get_origin(tp) is list or tp is list:
        return "A,B,..."
    if typing.get_origin(tp) is dict or tp is dict:
        return "JSON"
    return getattr(tp, "__name__", "VALUE").upper()


def parse_config(cls, argv=None, prog: str | None = None, description: str | None = None):
    """defaults < --config YAML < flags. Returns an instance of `cls`."""
    parser = build_parser(cls, prog=prog, description=description)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    cli = vars(args)
    data: dict = {}
    where = "command line"
    config_path = cli.pop("config", None)
    if config_path:
        data.update(load_yaml(config_path))
        where = f"{config_path} + command line"
    data.update(cli)
    try:
        return from_dict(cls, data, where=where)
    except ConfigError as e:
        parser.error(str(e))


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def save_config(cfg, path: str | Path, extra: dict | None = None) -> None:
    """Write the fully resolved config (plus `extra` keys) as YAML, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = to_dict(cfg)
    if extra:
        data.update(extra)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
    tmp.replace(path)


def load_run_config(run_dir: str | Path) -> dict:
    """The `config.yaml` a stage wrote in its output directory, as a plain dict."""
    return load_yaml(Path(run_dir) / "config.yaml")
