#!/usr/bin/env python3
"""Print constraints/gpu.txt from the environment this runs in (the GPU image).

    python scripts/freeze_gpu_constraints.py [--requirements FILE ...] > constraints/gpu.txt

Run it on the GPU machine with the image's interpreter, after the carried wheels (trl, datasets,
...) and the project's editable packages are installed the way they are used there. It starts
from the project's requirements -- requirements-test.txt (with the files it includes),
the dependency lists of pyproject.toml, BioReason/pyproject.toml and BioReason-Pro/pyproject.toml
with the optional groups the Makefile installs by default (--extra, default evo2), and any
--requirements file (e.g. a NODEPS_REQUIREMENTS file of the Makefile) -- follows
every installed distribution's own requirements (markers evaluated here, extras as requested),
and prints `name==version` for each one installed: sorted, PEP 503 names, local version tags
kept as installed (pip's `==2.11.0` matches `2.11.0+cu130` either way). Requirements that are
not installed here are listed in a comment at the end and make the exit status 1, so that a
partial environment is not mistaken for the stack. Only the standard library and `packaging`
(a dependency of transformers; else pip's vendored copy) are needed; torch is not imported.
"""
import argparse
import platform
import re
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

try:
    from packaging.requirements import InvalidRequirement, Requirement
except ImportError:  # pragma: no cover - a bare interpreter with pip only
    from pip._vendor.packaging.requirements import InvalidRequirement, Requirement

try:
    import tomllib
except ImportError:  # pragma: no cover - Python < 3.11
    tomllib = None

REPO = Path(__file__).resolve().parents[1]
PROJECT = {"biopost", "bioreason", "bioreason-pro"}
TOOLING = {"pip", "setuptools", "wheel", "distribute"}  # as tests/test_constraints.py
PYPROJECTS = ["pyproject.toml", "BioReason/pyproject.toml", "BioReason-Pro/pyproject.toml"]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path, seen=None):
    """Requirement strings of a requirements file, following -r / --requirement includes;
    -e / -c / other options are skipped (editables: their pyproject is read separately)."""
    seen = seen if seen is not None else set()
    path = path.resolve()
    if path in seen:
        return
    seen.add(path)
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ")):
            yield from requirement_lines(path.parent / line.split(None, 1)[1], seen)
        elif not line.startswith("-"):
            yield line


def pyproject_requirements(path: Path, extras=()):
    """The dependency list of a pyproject.toml and its optional-dependency groups named in extras."""
    if not path.is_file():
        return
    if tomllib is None:
        sys.exit("freeze_gpu_constraints: Python >= 3.11 is needed to read pyproject.toml")
    project = tomllib.loads(path.read_text()).get("project", {})
    yield from project.get("dependencies", [])
    optional = project.get("optional-dependencies", {})
    for name in extras:
        yield from optional.get(name, [])


def roots(extra_files, extras=()) -> list:
    lines = list(requirement_lines(REPO / "requirements-test.txt"))
    for p in PYPROJECTS:
        lines += list(pyproject_requirements(REPO / p, extras))
    for f in extra_files:
        lines += list(requirement_lines(Path(f)))
    reqs = []
    for line in lines:
        try:
            reqs.append(Requirement(line))
        except InvalidRequirement as e:
            sys.exit(f"freeze_gpu_constraints: cannot parse requirement {line!r}: {e}")
    return reqs


def applies(req: Requirement, extras) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": e}) for e in (extras or {""}))


def closure(reqs):
    """{name: version} of every installed distribution reached from reqs; and what is missing."""
    found, missing = {}, {}
    todo = [(r, set()) for r in reqs]
    done = set()
    while todo:
        req, from_extras = todo.pop()
        if not applies(req, from_extras):
            continue
        name = canonical(req.name)
        key = (name, frozenset(req.extras))
        if key in done:
            continue
        done.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            missing.setdefault(name, str(req))
            continue
        found[name] = dist.version
        for line in dist.requires or []:
            todo.append((Requirement(line), set(req.extras)))
    return found, missing


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requirements", action="append", default=[], metavar="FILE",
                   help="a further requirements file to start from (repeatable)")
    p.add_argument("--extra", action="append", default=None, metavar="NAME",
                   help="optional-dependency group of the project's pyproject.toml files to include, as the "
                        "Makefile's BIOREASON_EXTRAS installs them (repeatable; default: evo2)")
    p.add_argument("--no-extras", action="store_true", help="include no optional-dependency group")
    args = p.parse_args(argv)
    extras = [] if args.no_extras else (args.extra or ["evo2"])
    found, missing = closure(roots(args.requirements, extras))
    pins = {k: v for k, v in found.items() if k not in PROJECT | TOOLING}
    missing = {k: v for k, v in missing.items() if k not in PROJECT}
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    print("# Exact versions of the GPU stack: the device image, as frozen there by\n"
          f"# scripts/freeze_gpu_constraints.py on {when} (Python {platform.python_version()}, "
          f"{platform.machine()}).\n"
          "# `make venv STACK=gpu` (or `make test STACK=gpu VENV=<the image's environment>`) installs with\n"
          "# `pip install -c constraints/gpu.txt`; refresh by rerunning the script there.\n"
          "# Not listed: the editable project packages and installer tooling (pip, setuptools, wheel).")
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")
    if missing:
        print("# NOT INSTALLED in this environment (install them, e.g. from the carried wheels, and rerun):")
        for name in sorted(missing):
            print(f"#   {missing[name]}")
        print(f"freeze_gpu_constraints: {len(missing)} requirement(s) not installed here: "
              f"{', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
