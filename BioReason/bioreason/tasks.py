"""DNA tasks: KEGG pathway-disease reasoning and variant-effect prediction (coding / non-SNV).

Both take a reference and a variant sequence plus a question; the answer is a disease name
(KEGG) or `pathogenic|benign[; disease]` (variant effect). Rows may name the variant
`mutated_sequence` (the published variant-effect files do). Both are single-label tasks: the
answer is parsed after `</think>` / `Answer:`, scored by exact match of the normalized label,
and reported as accuracy and macro-F1 (biopost.tasks.classification_task); the GRPO
`correctness` reward is that same exact match.
"""
from biopost.data.schema import RowSchema, SeqField
from biopost.tasks import classification_task, reasoning_text, think_then_answer

DNA_SEQUENCES = (SeqField("reference_sequence", "dna"),
                 SeqField("variant_sequence", "dna", aliases=("mutated_sequence",)))

EVAL_SCHEMA = RowSchema(name="kegg", text=("question", "answer"), sequences=DNA_SEQUENCES,
                        optional_text_or_struct=("reasoning",))
TRAIN_SCHEMA = RowSchema(name="kegg", text=("question", "answer"), sequences=DNA_SEQUENCES,
                         text_or_struct=("reasoning",))


def prompt_messages(row: dict, system_prompt: str | None = None) -> list[dict]:
    content = [
        {"type": "text", "text": "Reference sequence: "},
        {"type": "dna", "sequence": row["reference_sequence"]},
        {"type": "text", "text": "\nVariant sequence: "},
        {"type": "dna", "sequence": row["variant_sequence"]},
        {"type": "text", "text": "\n\n" + row["question"].strip()},
    ]
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": content}]


def target_text(row: dict) -> str:
    return think_then_answer(reasoning_text(row.get("reasoning")), row["answer"].strip())


def gold(row: dict) -> str:
    return row["answer"].strip()


# Registered lazily by bioreason.modality (TASKS.register_lazy("kegg", "bioreason.tasks:KEGG")).
KEGG = classification_task("kegg", "dna", EVAL_SCHEMA, TRAIN_SCHEMA, prompt_messages, target_text, gold)
VEP = classification_task("vep", "dna", EVAL_SCHEMA, TRAIN_SCHEMA, prompt_messages, target_text, gold)
