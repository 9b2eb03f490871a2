"""Property-based tests of the four parsers users feed (cases: tests/fuzz_cases.py): the row
loaders, the config parser, the sweep-spec parser and the harvester. Every generated input --
valid, mutated, or damaged bytes -- parses, or raises the project's named error naming the file
(and the row or line for a row); the harvester never raises and lists every bad file with its
path. Derandomized and a few hundred cases in all, so the suite stays fast and reproducible;
bench/fuzz_parsers.py runs 10,000 per parser (counts in bench/RESULTS.md).
"""
import sys
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import fuzz_cases as fc  # noqa: E402


def fuzz(n: int) -> settings:
    return settings(max_examples=n, derandomize=True, database=None, deadline=None,
                    print_blob=True, suppress_health_check=list(HealthCheck))


@fuzz(120)
@given(fc.row_cases())
def test_row_loaders_parse_or_name_the_file_row_and_field(case):
    assert fc.in_dir(fc.run_rows, case) in ("ok", "named")


@fuzz(120)
@given(fc.config_cases())
def test_config_parser_parses_or_names_the_file(case):
    assert fc.in_dir(fc.run_config, case) in ("ok", "named")


@fuzz(60)
@given(fc.spec_cases())
def test_spec_parser_parses_or_names_the_file_and_keeps_sbatch_headers_intact(case):
    assert fc.in_dir(fc.run_spec, case) in ("ok", "named")


@fuzz(40)
@given(fc.harvest_cases())
def test_harvester_never_crashes_and_lists_every_bad_file_with_its_path(case):
    assert fc.in_dir(fc.run_harvest, case, plots=True) == "ok"


@pytest.mark.parametrize("flag", ["save_steps", "logging_steps"])
def test_zero_step_counts_are_config_errors_before_any_model_loads(flag):
    """`--save_steps 0` used to pass and die with ZeroDivisionError after the model loaded;
    each stage's config check (run before anything is loaded) now names the flag."""
    pytest.importorskip("torch")
    from biopost.config import ConfigError, from_dict
    from biopost.train.cpt import CPTConfig, check_config
    from biopost.train.grpo import GRPOConfig
    from biopost.train.grpo import validate_config as check_grpo
    from biopost.train.sft import SFTConfig
    from biopost.train.sft import validate_config as check_sft
    for cls, check in ((SFTConfig, check_sft), (GRPOConfig, check_grpo), (CPTConfig, check_config)):
        with pytest.raises(ConfigError, match=flag):
            check(from_dict(cls, {flag: 0}))
