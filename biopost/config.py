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

from biopost.errors import UserError

_TRUE = {"true", "yes", "on", "1", "y", "t"}
_FALSE = {"false", "no", "off", "0", "n", "f"}
_NONE = {"none", "null", "~", ""}


class ConfigError(UserError, ValueError):
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
    except (ValueError, TypeError, OverflowError, RecursionError):  # JSONDecodeError is a ValueError
        pass
    else:
        raise ConfigError(f"{where}: unsupported field type {inner!r}")
    shown = repr(value)
    shown = shown if len(shown) <= 120 else shown[:117] + "..."
    raise ConfigError(f"{where}: expected {getattr(inner, '__name__', inner)}, got {shown}")


def field_types(cls) -> dict:
    return typing.get_type_hints(cls)


# A config is a flat mapping of flags; anything nested deeper than this is not one (and deeper
# structures would exhaust the recursion of every later step).
MAX_YAML_DEPTH = 32


def flow_depth_exceeds(raw: bytes, limit: int = 200) -> bool:
    """Whether `raw` opens more than `limit` flow collections (`[`, `{`) at once. PyYAML's
    scanner is quadratic in that depth (3,000 levels: a second; 30,000: minutes), so a file is
    refused before parsing. Brackets inside quoted strings count too: no real config has 200
    of them unclosed."""
    depth = 0
    for b in raw.translate(None, delete=bytes(c for c in range(256) if c not in b"[]{}")):
        depth += 1 if b in b"[{" else -1
        if depth > limit:
            return True
    return False


def load_yaml(path: str | Path) -> dict:
    """A YAML config file as a dict with string keys. Every way a file can be wrong (missing,
    unreadable, not YAML, an integer beyond Python's 4,300-digit limit, a recursive anchor,
    a non-string key) is a ConfigError naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except (OSError, ValueError) as e:  # ENAMETOOLONG, EACCES, ...; ValueError: a NUL in the path
        raise ConfigError(f"config file {path}: cannot read: {getattr(e, 'strerror', None) or e}"
                          ) from None
    if flow_depth_exceeds(raw):
        raise ConfigError(f"{path}: nested too deeply to be a config")
    try:
        data = yaml.safe_load(raw) or {}  # bytes: YAML's own encoding detection and errors
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except ValueError as e:  # int() of a 4,300+ digit integer (the only ValueError safe_load has)
        what = ("an integer of more than 4,300 digits (quote it if it is text)"
                if "digits" in str(e) else str(e)[:160])
        raise ConfigError(f"{path}: unreadable value: {what}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level")
    check_plain(data, str(path))
    return data


def check_plain(data, where: str, max_depth: int = MAX_YAML_DEPTH) -> None:
    """Raise ConfigError unless `data` is a tree of plain values: string mapping keys, no
    recursive anchor (`&a [*a]`), at most `max_depth` levels. Iterative: a hostile document
    cannot exhaust the recursion limit here."""
    stack = [(data, (), 0)]  # (value, ids of the containers above it, depth)
    seen: dict[int, int] = {}  # id -> shallowest depth explored: a shared anchor is walked once
    while stack:
        value, above, depth = stack.pop()
        if not isinstance(value, (dict, list)):
            continue
        if id(value) in above:
            raise ConfigError(f"{where}: a recursive YAML anchor (a value that contains itself)")
        if seen.get(id(value), max_depth + 1) <= depth:
            continue
        seen[id(value)] = depth
        if depth >= max_depth:
            raise ConfigError(f"{where}: nested deeper than {max_depth} levels")
        inner = (*above, id(value))
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str):
                    raise ConfigError(f"{where}: key {str(k)[:80]!r} is a {type(k).__name__}; "
                                      "config keys must be strings (quote it)")
                stack.append((v, inner, depth + 1))
        else:
            stack.extend((v, inner, depth + 1) for v in value)


def stage_class(cls):
    """`cls`, extended by the registered modalities' flag fields when it asks for them
    (`modality_flags = True`: the stage configs that build a bio model)."""
    from biopost.modality import with_modality_flags
    return with_modality_flags(cls)


def from_dict(cls, data: dict, where: str = "config"):
    """Build `cls` from a mapping, validating keys and types."""
    cls = stage_class(cls)
    types_ = field_types(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in types_]
    if unknown:
        close = {k: [n for n in names if n.replace("_", "") == str(k).replace("_", "").replace("-", "")]
                 for k in unknown}
        hints = "".join(f" (did you mean {close[k][0]!r}?)" for k in unknown if close[k])
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))} for {cls.__name__}{hints}")
    values = {k: coerce(v, types_[k], f"{where}: {k}") for k, v in data.items()}
    return cls(**values)


def build_parser(cls, prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description, allow_abbrev=False,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", default=None, help="YAML file of config keys (command-line flags override it)")
    cls = stage_class(cls)
    types_ = field_types(cls)
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in dataclasses.fields(cls):
        target = parser
        owner = f.metadata.get("modality")
        if owner:  # a modality's flags get a heading of their own in --help
            if owner not in groups:
                from biopost.modality import get_modality
                desc = get_modality(owner).description
                groups[owner] = parser.add_argument_group(f"{owner} modality", desc or None)
            target = groups[owner]
        inner, _ = _unwrap_optional(types_[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_ = f.metadata.get("help", "") or " "
        if inner is bool:
            # nargs="?" so that a bare `--flag` is True and `--flag false` is False.
            target.add_argument(f"--{f.name}", nargs="?", const="true", default=argparse.SUPPRESS,
                                metavar="BOOL", help=f"{help_} (default: {default})")
        else:
            target.add_argument(f"--{f.name}", default=argparse.SUPPRESS, metavar=_metavar(inner),
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
    from biopost.files import write_text_atomic  # temp file + fsync + rename, 0o666 & ~umask
    data = to_dict(cfg)
    if extra:
        data.update(extra)
    write_text_atomic(path, yaml.safe_dump(data, sort_keys=False, default_flow_style=None))


def load_run_config(run_dir: str | Path) -> dict:
    """The `config.yaml` a stage wrote in its output directory, as a plain dict."""
    return load_yaml(Path(run_dir) / "config.yaml")
