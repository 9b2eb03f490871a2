#!/usr/bin/env python3
"""SFT of a protein reasoning model (protein encoder -> MLP projector -> Qwen3) on GO data.

BioReason-Pro's two-stage recipe on the shared SFT trainer (biopost.train.sft):
  --training_stage 1   projector only: the language model frozen, no LoRA
                       (= --train_projector_only true)
  --training_stage 2   projector + LoRA, the projector initialized from stage 1:
                       --projector_checkpoint_path <stage-1 run>/checkpoints/last
  (no --training_stage: one stage, projector + LoRA from scratch, as the DNA recipe)
Example (tiny CPU run):
  python BioReason-Pro/train_protein_llm.py --config BioReason-Pro/configs/sft_tiny.yaml \\
      --training_stage 1 --output_dir runs/protein_s1
  python BioReason-Pro/train_protein_llm.py --config BioReason-Pro/configs/sft_tiny.yaml \\
      --training_stage 2 --projector_checkpoint_path runs/protein_s1/checkpoints/last --output_dir runs/protein_s2
Every config key is also a flag; `--help` lists them. `--train_data_fraction`, `--eval_every` /
`--stop_on_ood_peak` (the OOD-peak monitor on id_val / ood_val, with the task's headline) work as in
every SFT. Exit code 75 means "checkpointed after SIGTERM/SIGUSR1, requeue me".
"""
import sys

STAGE_FLAGS = {"1": ["--train_projector_only", "true"], "2": ["--train_projector_only", "false"]}


def stage_argv(argv: list[str]) -> list[str]:
    """argv with `--training_stage N` (or `--training_stage=N`) replaced by the core flags it means.
    A bad value exits 2 (usage), as any bad flag."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--training_stage" or arg.startswith("--training_stage="):
            if "=" in arg:
                value = arg.split("=", 1)[1]
            elif i + 1 < len(argv):
                value, i = argv[i + 1], i + 1
            else:
                value = ""
            if value not in STAGE_FLAGS:
                print(f"train_protein_llm.py: error: --training_stage must be 1 (projector only) or 2 "
                      f"(projector + LoRA), got {value!r}", file=sys.stderr)
                raise SystemExit(2)
            out += STAGE_FLAGS[value]
        else:
            out.append(arg)
        i += 1
    return out


def main(argv=None) -> int:
    from biopost.train.sft import main as sft_main
    argv = sys.argv[1:] if argv is None else list(argv)
    return sft_main(stage_argv(argv), prog="train_protein_llm.py")


if __name__ == "__main__":
    sys.exit(main())
