"""The harvester runs on a login node: a full `biopost harvest` never imports torch or
transformers. Checked in a fresh interpreter, since this test process may have imported them."""
import json
import os
import subprocess
import sys

SCRIPT = """
import json, sys
from biopost.cli import main
rc = main(["harvest", "--root", sys.argv[1], "--out", sys.argv[2]])
print(json.dumps({"rc": rc, "modules": sorted(m.split(".")[0] for m in sys.modules)}))
"""


def test_harvest_imports_neither_torch_nor_transformers(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "figures"
    for epochs, acc in ((1, 0.5), (2, 0.75)):
        for split in ("id", "ood"):
            d = root / "s" / "sft" / f"e{epochs}" / "eval" / split
            d.mkdir(parents=True)
            (d / "metrics.json").write_text(json.dumps({
                "schema": "biopost.metrics/v1", "run_id": f"e{epochs}", "sweep": "s",
                "cell": {"sft.num_train_epochs": epochs}, "stage": "sft", "task": "kegg",
                "split": split, "headline": "accuracy", "n": 10,
                "metrics": {"accuracy": acc}, "seed": 0}))
    env = dict(os.environ, MPLBACKEND="")  # no backend hint: the harvester must not need one
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(root), str(out)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["rc"] == 0
    # It did the whole job (tables and a plot), so the module list below is the full one.
    assert (out / "results_id_ood.md").is_file()
    assert (out / "s__sft.num_train_epochs.png").stat().st_size > 1000
    modules = set(report["modules"])
    assert {"biopost", "pandas", "matplotlib"} <= modules
    assert "torch" not in modules
    assert "transformers" not in modules
