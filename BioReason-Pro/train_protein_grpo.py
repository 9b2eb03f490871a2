#!/usr/bin/env python3
"""GRPO of a protein reasoning model (protein encoder -> MLP projector -> Qwen3) on GO prompts.

The shared GRPO trainer (biopost.train.grpo) with the full model: the protein's embeddings are
spliced into the prompt of every rollout and of every log-prob pass (policy, old policy,
reference), so the encoder and the projector are in the loop. The published study's protein
GRPO dropped the ESM encoder and pasted the sequence into the prompt as text, took the old
log-probs from the current policy (ratio identically 1) and read GO-GPT predictions
(`go_pred_leaf`) as gold; none of that happens here: gold comes only from `go_mf / go_bp /
go_cc` (the `go` task's gold(); a row whose only labels are in `go_pred*` is an error).

Rewards: `go_f1` (registered by BioReason-Pro: the IA-weighted F1 of the answer's GO ids,
propagated over is_a / part_of, against the propagated gold; `go_f1_per_aspect` for the mean over
MF / BP / CC) plus the core's `format` (one `<think>...</think>` block, then an answer).
Warm start from the SFT LoRA: --init sft --sft_checkpoint <sft run>/checkpoints/last (the adapter
continues; --merge_sft true merges it and trains a fresh one); cold start: --init base.
The BioReason-Pro paper's settings (Table S18; configs/grpo_4b.yaml): --loss_type dr_grpo
--num_generations 24, 8 prompts per optimizer step, --steps_per_generation 2 --num_iterations 1,
--beta 1e-4, --epsilon 7e-4 --epsilon_high 9e-4 --importance_sampling_level sequence (one GSPO ratio
per completion) --delta 2.0 (that ratio capped at 2: TRL's two-sided clipping), --learning_rate 3e-5,
LoRA 16/32/0.05, --temperature 1.0 --top_k 20 --top_p 0.95.
Example (tiny CPU run, after the tiny protein SFT):
  python BioReason-Pro/train_protein_grpo.py --config BioReason-Pro/configs/grpo_tiny.yaml
Every config key is also a flag (`--beta 1e-3`); `--help` lists them and explains the batch sizes.
Exit code 75 means "checkpointed after SIGTERM/SIGUSR1, requeue me"; rerunning the same command resumes.
"""
import sys

from biopost.train.grpo import main

if __name__ == "__main__":
    sys.exit(main(prog="train_protein_grpo.py"))
