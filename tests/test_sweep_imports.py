"""biopost.sweeps runs on cluster login nodes: it must import neither torch nor transformers and
answer in about a second (DESIGN.md section 1) -- for the DNA modality and for a modality that
is found only through its entry point (the tests' toy modality, with BioReason blocked)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from sweep_helpers import PYTHON, REPO, cli_env, two_stage_spec, write_spec  # noqa: E402

TOY = REPO / "tests" / "fixtures" / "toy_modality"


def _toy_env(tmp_path, env):
    from test_seams import write_toy_dist
    site = write_toy_dist(tmp_path / "site")
    return dict(env, PYTHONPATH=os.pathsep.join([str(site), str(TOY)]))


@pytest.mark.parametrize("modality", ["dna", "toy"])
def test_sweeps_import_neither_torch_nor_transformers(tmp_path, modality):
    sys.path.insert(0, str(Path(__file__).parent))
    spec_doc = two_stage_spec("imports", grid={"num_train_epochs": [1, 2]})
    env = cli_env(tmp_path)
    block = ""
    if modality == "toy":
        spec_doc.update(modality="toy", task="toy_motif")
        spec_doc["eval"].pop("script")  # taken from the toy modality's record
        env = _toy_env(tmp_path, env)
        block = "sys.modules['bioreason'] = None\n"
    spec = write_spec(tmp_path / "spec.yaml", spec_doc)
    code = (
        "import sys, time\n" + block +
        "t0 = time.time()\n"
        "import biopost.cli, biopost.sweeps.cli, biopost.sweeps.runner, biopost.sweeps.local\n"
        "import biopost.sweeps.plan, biopost.sweeps.spec, biopost.sweeps.status, biopost.sweeps.slurm\n"
        f"assert biopost.cli.main(['sweep', 'plan', {str(spec)!r}, '--work_root', {str(tmp_path)!r}, '--dry-run']) == 0\n"
        f"assert biopost.cli.main(['sweep', 'status', {str(spec)!r}, '--work_root', {str(tmp_path)!r}]) == 0\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'accelerate') if m in sys.modules)\n"
        "print('HEAVY', heavy, 'SECONDS', round(time.time() - t0, 2))\n"
        "sys.exit(1 if heavy else 0)\n")
    proc = subprocess.run([PYTHON, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    line = [x for x in proc.stdout.splitlines() if x.startswith("HEAVY")][0]
    assert line.startswith("HEAVY []")
    assert float(line.split()[-1]) < 5  # answers in about a second (generous for a loaded CI box)
    if modality == "toy":
        assert "tests/fixtures/toy_modality/eval_toy.py" in proc.stdout  # the eval script the record names
