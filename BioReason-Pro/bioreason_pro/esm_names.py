"""Names the `esm` encoder backend serves, torch-free (the plug-in module and `encoder_spec`
read them on a login node): the published ESM-3 / ESM C models and the tiny test models."""
from __future__ import annotations

from pathlib import Path

CONFIG_FILE = "esm_config.json"
WEIGHTS_FILE = "model.safetensors"
ESM3_SMALL_LAYER = 37

# The published open models: architecture (as esm.pretrained builds them), HF repository, file.
PUBLISHED = {
    "esm3_sm_open_v1": {"arch": "esm3", "d_model": 1536, "n_heads": 24, "v_heads": 256, "n_layers": 48,
                        "repo": "EvolutionaryScale/esm3-sm-open-v1", "file": "data/weights/esm3_sm_open_v1.pth"},
    "esmc_300m": {"arch": "esmc", "d_model": 960, "n_heads": 15, "n_layers": 30,
                  "repo": "EvolutionaryScale/esmc-300m-2024-12", "file": "data/weights/esmc_300m_2024_12_v0.pth"},
    "esmc_600m": {"arch": "esmc", "d_model": 1152, "n_heads": 18, "n_layers": 36,
                  "repo": "EvolutionaryScale/esmc-600m-2024-12", "file": "data/weights/esmc_600m_2024_12_v0.pth"},
}
ALIASES = {
    "esm3-sm-open-v1": "esm3_sm_open_v1", "esm3-open": "esm3_sm_open_v1", "esm3-open-2024-03": "esm3_sm_open_v1",
    "evolutionaryscale/esm3-sm-open-v1": "esm3_sm_open_v1", "esm3": "esm3_sm_open_v1",
    "esmc-300m": "esmc_300m", "evolutionaryscale/esmc-300m-2024-12": "esmc_300m",
    "esmc-600m": "esmc_600m", "evolutionaryscale/esmc-600m-2024-12": "esmc_600m",
}


TINY_CONFIGS = {
    "esm3-protein": {"arch": "esm3", "d_model": 64, "n_heads": 4, "v_heads": 2, "n_layers": 2},
    "esmc-protein": {"arch": "esmc", "d_model": 64, "n_heads": 4, "n_layers": 2},
}
TINY_KINDS = tuple(TINY_CONFIGS)


def published_name(name: str) -> str | None:
    """The published model a name refers to (esm3_sm_open_v1, esmc_300m, esmc_600m), or None."""
    key = str(name).strip().lower()
    return key if key in PUBLISHED else ALIASES.get(key)


def is_esm_model(name: str) -> bool:
    """Whether `name` is served by this backend: a published esm name, a tiny esm-package model,
    or a directory written by `save_pretrained` (has esm_config.json). Torch-free."""
    if not name:
        return False
    if published_name(name):
        return True
    if str(name).startswith("biopost-tiny/") and str(name).split("/", 1)[1] in TINY_KINDS:
        return True
    p = Path(name)
    return p.is_dir() and (p / CONFIG_FILE).is_file()
