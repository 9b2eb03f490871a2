"""The installed environment is exactly the pinned one (issue 23, README "Environments").

`make venv` / `make test` install with `pip install -c constraints/$(STACK).txt` and record how
in `<venv>/.biopost-installed` ("stack=cpu pin=constraints ..."). Here the distributions of the
running interpreter (importlib.metadata, what `pip freeze --all` lists) must equal the pins of
that file: same names (PEP 503-normalized), same versions with local tags dropped
(`2.13.0+cpu` == `2.13.0`), nothing missing and nothing extra. Left out on both sides:
  - the project's own editable packages (biopost, bioreason, bioreason-pro);
  - installer tooling (pip, setuptools, wheel): it comes with the venv module and
    `pip install --upgrade pip`, not from our requirements, `pip freeze` itself hides it on
    Python < 3.12, and it does not take part in anything the code computes.
(On the GPU stack only the pins are checked: that image carries more than the project uses.)
Runs in the project's own environment (the stamp above is in sys.prefix) and always with
CI=true (then against constraints/cpu.txt when there is no stamp); elsewhere it skips and says why.
"""
import os
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAMP = Path(sys.prefix) / ".biopost-installed"
PROJECT = {"biopost", "bioreason", "bioreason-pro"}
TOOLING = {"pip", "setuptools", "wheel", "distribute"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def public(version: str) -> str:
    return version.split("+", 1)[0]


def read_constraints(path: Path) -> dict:
    pins = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)", line)
        assert m, f"{path.name}:{n}: not an exact pin (name==version): {raw!r}"
        name = canonical(m.group(1))
        assert name not in pins, f"{path.name}:{n}: {name} pinned twice"
        pins[name] = m.group(2)
    return pins


def installed() -> dict:
    out = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:  # a half-removed install can leave a dist-info without metadata
            out.setdefault(canonical(name), dist.version)
    return out


def stamp_fields() -> dict | None:
    if not STAMP.is_file():
        return None
    return dict(f.split("=", 1) for f in STAMP.read_text().split() if "=" in f)


def diff(pins: dict, have: dict, extras: bool = True) -> list[str]:
    """What differs; extras=False: only what is pinned (an image that carries more than we use)."""
    skip = PROJECT | TOOLING
    pins = {k: v for k, v in pins.items() if k not in skip}
    have = {k: v for k, v in have.items() if k not in skip}
    problems = [f"missing: {k}=={pins[k]} is pinned but not installed" for k in sorted(pins.keys() - have.keys())]
    if extras:
        problems += [f"extra: {k}=={have[k]} is installed but not pinned" for k in sorted(have.keys() - pins.keys())]
    problems += [f"version: {k} is {have[k]}, pinned {pins[k]}" for k in sorted(pins.keys() & have.keys())
                 if public(have[k]) != public(pins[k])]
    return problems


def test_installed_set_equals_the_constraints():
    fields = stamp_fields()
    ci = os.environ.get("CI", "").lower() == "true"
    if fields is None and not ci:
        pytest.skip(f"not the project's own environment ({STAMP} does not exist; `make test` makes one); "
                    "set CI=true to check this one against constraints/cpu.txt anyway")
    fields = fields or {}  # CI=true without a stamp: the CPU pins
    if fields.get("pin") == "ranges":
        pytest.skip("this environment was installed from the ranges (make ... PIN=ranges), not from the pins")
    stack = fields.get("stack", "cpu")
    path = REPO / "constraints" / f"{stack}.txt"
    # the CPU venv is made from nothing but our requirements: it must be exactly the pins; the GPU
    # image carries more than the project uses: there every pin must hold, extras are allowed
    problems = diff(read_constraints(path), installed(), extras=stack == "cpu")
    assert not problems, (
        f"the environment at {sys.prefix} differs from {path.relative_to(REPO)}:\n  " + "\n  ".join(problems)
        + "\nReinstall it (`make venv`), or, to move a pin, see README \"Environments\" "
          "(scripts/refresh_constraints.sh).")


def test_comparison_normalizes_names_and_local_versions():
    pins = {"torch": "2.13.0+cpu", "pyyaml": "6.0.4", "typing-extensions": "4.16.0", "pip": "1"}
    have = {canonical("PyYAML"): "6.0.4", canonical("typing_extensions"): "4.16.0", "torch": "2.13.0",
            "setuptools": "80", "biopost": "0.1.0"}
    assert diff(pins, have) == []
    assert diff(pins, {**have, "torch": "2.12.0+cpu", "extra-pkg": "1.0"}) == [
        "extra: extra-pkg==1.0 is installed but not pinned", "version: torch is 2.12.0+cpu, pinned 2.13.0+cpu"]
    assert diff({**pins, "gone": "1"}, have) == ["missing: gone==1 is pinned but not installed"]
    assert diff(pins, {**have, "extra-pkg": "1.0"}, extras=False) == []


@pytest.mark.parametrize("stack", ["cpu", "gpu"])
def test_constraints_files_are_exact_pins_sorted_and_cover_the_core(stack):
    path = REPO / "constraints" / f"{stack}.txt"
    pins = read_constraints(path)
    names = list(pins)
    assert names == sorted(names), f"{path.name} is not sorted by normalized name"
    for name in ("torch", "transformers", "peft", "accelerate", "trl"):
        assert name in pins, f"{path.name} does not pin {name}"
    assert not PROJECT & pins.keys(), f"{path.name} pins the project's own packages"
    assert not TOOLING & pins.keys(), f"{path.name} pins installer tooling"
    if stack == "cpu":  # the CPU wheel; an unpinned torch would be a multi-GB CUDA build
        assert public(pins["torch"]) == "2.13.0"
    else:  # the GPU image's stack
        assert {k: public(pins[k]) for k in ("torch", "transformers", "peft", "accelerate")} == {
            "torch": "2.11.0", "transformers": "5.17.0", "peft": "0.21.0", "accelerate": "1.15.0"}
    assert pins["trl"] == read_constraints(REPO / "constraints" / "cpu.txt")["trl"], "the TRL oracle differs"
