"""The core's imports point one way (DESIGN section 9): entry scripts -> modality packages -> train
-> eval -> generate -> model / encoders -> data -> metrics / config / registry / paths, with the
torch-free stage, signals and runtime at the bottom.

Every `import` in biopost counts, function-level ones included (a deferred import is still a
dependency). Nodes are the subpackages (biopost.train, biopost.eval, ...) and the top-level
modules (biopost.tasks, biopost.rewards, ...)."""
import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "biopost"


def node_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "biopost"
    return "biopost." + parts[1]


def import_graph():
    """{node: {node it imports: [(file, line, imported module)]}} over biopost."""
    graph = defaultdict(lambda: defaultdict(list))
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if rel.name == "__init__" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:   # relative: resolve against the package
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    names = [".".join(base + ([node.module] if node.module else []))]
                else:
                    names = [node.module or ""]
                if names[0] == "biopost":   # `from biopost import tiny`
                    names = [f"biopost.{a.name}" for a in node.names]
            for name in names:
                if name.startswith("biopost.") or name == "biopost":
                    a, b = node_of(module), node_of(name)
                    if a != b and b != "biopost":
                        graph[a][b].append((str(path.relative_to(ROOT.parent)), node.lineno, name))
    return graph


def reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), {}):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_circle_between_subpackages():
    graph = import_graph()
    assert graph["biopost.train"], "the walker found no imports: it is broken"
    circles = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            if a in reachable(graph, b):
                circles.append(f"{a} -> {b} (e.g. {graph[a][b][0]}) and back")
    assert not circles, "\n".join(circles)


def test_evaluation_imports_nothing_from_training():
    graph = import_graph()
    assert "biopost.train" not in reachable(graph, "biopost.eval"), dict(graph["biopost.eval"])


def test_sweeps_and_harvest_stay_off_the_heavy_subpackages():
    """They run on a login node: nothing of train / model / eval / generate / encoders, even
    transitively (the runtime check that torch stays unimported is tests/test_sweep_imports.py)."""
    graph = import_graph()
    heavy = {"biopost.train", "biopost.model", "biopost.eval", "biopost.generate", "biopost.encoders"}
    for start in ("biopost.sweeps", "biopost.harvest"):
        bad = reachable(graph, start) & heavy
        assert not bad, f"{start} reaches {sorted(bad)}"


def test_the_walker_sees_a_circle_when_there_is_one(tmp_path, monkeypatch):
    """The checks above can fail: a planted package pair importing each other is reported."""
    pkg = tmp_path / "biopost"
    (pkg / "alpha").mkdir(parents=True)
    (pkg / "beta").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "alpha" / "__init__.py").write_text("def f():\n    from biopost.beta import g\n")
    (pkg / "beta" / "__init__.py").write_text("from biopost.alpha import f\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", pkg)
    graph = import_graph()
    assert "biopost.alpha" in reachable(graph, "biopost.beta") and "biopost.beta" in reachable(graph, "biopost.alpha")


def test_training_modules_stay_readable():
    """Readability proxies for biopost/train (issue: each stage reads top to bottom): no module over
    450 lines, no function over 150."""
    too_long = []
    for path in sorted((ROOT / "train").glob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 450:
            too_long.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 150:
                too_long.append(f"{path.name}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long
