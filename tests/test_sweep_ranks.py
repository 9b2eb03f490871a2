"""Several ranks per cell: the sbatch script, the srun + torchrun lines, the rendezvous port, and
the spec errors (biopost.sweeps.ranks). The SLURM integration test runs such a job for real."""
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from sweep_helpers import REAL, cli_env, sweep, two_stage_spec, write_spec  # noqa: E402

from biopost.sweeps import ranks  # noqa: E402
from biopost.sweeps.spec import SpecError, load_spec  # noqa: E402


def ranked_spec(tmp_path, resources, eval_resources=None):
    spec = two_stage_spec("ranked", stage=REAL, resources=resources)
    if eval_resources is not None:
        spec["eval"]["resources"] = eval_resources
    return write_spec(tmp_path / "spec.yaml", spec)


def test_dry_run_prints_the_srun_and_torchrun_lines_for_two_nodes_of_four_gpus(tmp_path):
    path = ranked_spec(tmp_path, {"nodes": 2, "gpus_per_node": 4, "cpus": 32},
                       {"nodes": 1, "gpus_per_node": 1, "procs_per_node": 1})
    out = sweep("plan", path, "--work_root", tmp_path / "runs", "--dry-run", env=cli_env(tmp_path)).stdout
    train, evaluation = out.split("# ===== job eval-sft")[0], out.split("# ===== job eval-sft")[1]
    assert "#SBATCH --nodes=2" in train and "#SBATCH --ntasks-per-node=1" in train
    assert "#SBATCH --gres=gpu:4" in train and "#SBATCH --cpus-per-task=32" in train
    # the runner runs in the batch shell (no srun around it): it starts the stage's step itself
    runner = next(line for line in train.splitlines() if "biopost.sweeps.runner" in line)
    assert not runner.startswith("srun"), runner
    task = next(line for line in train.splitlines() if line.startswith("#   task 0"))
    words = shlex.split(task.split(": ", 1)[1])
    assert words[:6] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                         "--cpus-per-task=32"]
    i = words.index("biopost.launch")
    assert words[i + 1:i + 5] == ["--nnodes=2", "--nproc-per-node=4", "--rdzv-backend=c10d",
                                  "--rdzv-endpoint=<first host of the job>:<29500 + job id mod 1000>"]
    assert words[i + 6] == REAL["script"]
    # the evaluation stays one process under one srun task
    assert "#SBATCH --nodes" not in evaluation and "#SBATCH --gres=gpu:1" in evaluation
    eval_runner = next(line for line in evaluation.splitlines() if "biopost.sweeps.runner" in line)
    assert eval_runner.startswith("srun --ntasks=1")
    assert "biopost.launch" not in evaluation


def test_one_process_keeps_the_plain_script():
    assert ranks.stage_command(None, "py", "s.py", ["--a", "1"], slurm=True) == ["py", "s.py", "--a", "1"]
    assert ranks.stage_command({"nodes": 1, "procs_per_node": 1}, "py", "s.py", [], slurm=True) == ["py", "s.py"]
    assert ranks.stage_command({"nodes": 1, "procs_per_node": 2}, "py", "s.py", ["x"], slurm=False) == [
        "py", "-m", "biopost.launch", "--standalone", "--nnodes=1", "--nproc-per-node=2", "s.py", "x"]


@pytest.mark.parametrize("resources, world", [({}, (1, 1)), ({"gpus": 4}, (1, 4)), ({"gpus": "h200:2"}, (1, 2)),
                                              ({"nodes": 2, "gpus_per_node": 8}, (2, 8)),
                                              ({"nodes": 3, "gpus": 0, "procs_per_node": 2}, (3, 2))])
def test_world_of_resources(resources, world):
    assert ranks.world_of(resources) == world


def test_rendezvous_port_is_fixed_by_the_job_and_stays_in_its_range():
    assert ranks.rendezvous_port("12345") == ranks.rendezvous_port(12345) == 29500 + 345
    assert ranks.rendezvous_port("12345", 1) == 29500 + 346
    assert ranks.rendezvous_port("999", 1) == 29500  # wraps inside the range
    assert all(29500 <= ranks.rendezvous_port(j, a) < 30500 for j in range(0, 5000, 7) for a in range(3))
    assert ranks.rendezvous_port(None) == 29500


def test_first_host_expands_the_node_list():
    assert ranks.first_host({}) == "127.0.0.1"
    # without scontrol answering, a plain host list falls back to its first entry
    assert ranks.first_host({"SLURM_JOB_NODELIST": "nodeA,nodeB", "PATH": "/nonexistent"}) == "nodeA"


def test_evaluation_inherits_several_ranks_and_runs_them_the_same_way(tmp_path):
    path = ranked_spec(tmp_path, {"nodes": 2, "gpus_per_node": 4})
    out = sweep("plan", path, "--work_root", tmp_path / "runs", "--dry-run", env=cli_env(tmp_path)).stdout
    evaluation = out.split("# ===== job eval-sft")[1]
    assert "#SBATCH --nodes=2" in evaluation
    task = next(line for line in evaluation.splitlines() if line.startswith("#   task 0"))
    assert "srun --nodes=2 --ntasks=2" in task and "--nproc-per-node=4" in task, task


@pytest.mark.parametrize("resources, match", [
    ({"nodes": 0}, r"resources\.nodes.*integer >= 1"),
    ({"nodes": "2"}, r"resources\.nodes.*integer >= 1"),
    ({"procs_per_node": 0}, r"resources\.procs_per_node.*integer >= 1"),
    ({"gpus_per_node": -1}, r"resources\.gpus_per_node"),
    ({"gpus": 2, "gpus_per_node": 4}, r"resources\.gpus_per_node.*keep one"),
])
def test_bad_rank_resources_are_named(tmp_path, resources, match):
    path = ranked_spec(tmp_path, resources, {"nodes": 1, "gpus_per_node": 1, "procs_per_node": 1})
    with pytest.raises(SpecError, match=match):
        load_spec(path)
