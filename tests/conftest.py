"""Shared fixtures. Tiny models and the embedding cache live in one session-wide temp dir;
the tiny SFT run that several tests inspect is trained once per session."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


@pytest.fixture(scope="session", autouse=True)
def biopost_cache(tmp_path_factory):
    """One cache for the session (tiny models are built once); never the user's real cache."""
    if "BIOPOST_TEST_CACHE" in os.environ:
        path = Path(os.environ["BIOPOST_TEST_CACHE"])
    else:
        path = tmp_path_factory.mktemp("biopost_cache")
    os.environ["BIOPOST_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matmuls: a second thread only adds synchronization, and on a loaded 2-core CPU it
    costs up to 10x. Module-scoped, so a test module opts in with an autouse fixture of its own."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """The default synthetic KEGG splits, as `biopost data synth-kegg --seed 0` writes them."""
    from bioreason.synth_kegg import SynthConfig, generate, write
    out = tmp_path_factory.mktemp("kegg_synth")
    cfg = SynthConfig(seed=0)
    write(out, generate(cfg), cfg)
    return out


@pytest.fixture(scope="session")
def tiny_sft_run(tmp_path_factory, synth_data, biopost_cache):
    """The tiny SFT of BioReason/configs/sft_tiny.yaml, trained once (about a minute)."""
    from biopost.config import from_dict, load_yaml
    from biopost.train.sft import SFTConfig, train_sft
    out = tmp_path_factory.mktemp("sft_tiny")
    data = load_yaml(ROOT / "BioReason/configs/sft_tiny.yaml")
    data.update(output_dir=str(out), data_path=str(synth_data), resume="never")
    cfg = from_dict(SFTConfig, data)
    assert train_sft(cfg) == 0
    return out


def run_script(args, cwd=ROOT, env=None, **kw):
    import subprocess
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=full_env, capture_output=True,
                          text=True, **kw)


def trained_tensors(run) -> dict:
    """The trained tensors of a run's last checkpoint (bio modules + LoRA adapter), by name."""
    from safetensors.torch import load_file
    ckpt = Path(run) / "checkpoints/last"
    tensors = load_file(str(ckpt / "bio_modules.safetensors"))
    tensors.update({f"adapter.{k}": v for k, v in load_file(str(ckpt / "adapter/adapter_model.safetensors")).items()})
    return tensors


def write_split(directory, rows):
    """rows as directory/train.jsonl (a one-split dataset)."""
    import json
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return directory


def signal_when(proc, ready, signum, what: str, timeout: float = 300.0, interval: float = 0.02) -> None:
    """Send `signum` to `proc` once `ready()` is true (a checkpoint, a written batch); fails if the
    process ends first or `what` does not happen within `timeout` seconds."""
    import time
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"the process ended (exit {proc.returncode}) before {what}"
        assert time.time() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(interval)
    assert proc.poll() is None, f"the process ended before it could be signalled after {what}"
    proc.send_signal(signum)
