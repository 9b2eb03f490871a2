"""The chat formatter supervises exactly the assistant span, and text truncation never cuts bio tokens."""
import pytest

from biopost.data.chat import IGNORE_INDEX, bio_tokens, encode, render
from biopost.modality import MODALITIES, all_bio_tokens


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from biopost.tiny import resolve_model_path
    t = AutoTokenizer.from_pretrained(resolve_model_path("biopost-tiny/qwen3"))
    t.add_tokens(all_bio_tokens(), special_tokens=True)
    return t


def ids_of(tok):
    bio = set(tok.convert_tokens_to_ids(all_bio_tokens()))
    pads = {m: tok.convert_tokens_to_ids(bio_tokens(m)[1]) for m in MODALITIES.names()}
    return bio, pads


ASSISTANT = "<think>\nThe variant creates a motif.\n</think>\n\nAnswer: Prion disease"


def messages(answer=ASSISTANT):
    return [{"role": "system", "content": "You are a geneticist."},
            {"role": "user", "content": [{"type": "text", "text": "Reference: "},
                                         {"type": "dna", "sequence": "ACGTACGTACGT"},
                                         {"type": "text", "text": "\nQuestion: which disease?"}]},
            {"role": "assistant", "content": answer}]


def test_render_matches_qwen3_chatml():
    r = render(messages(), lambda item: 3)
    begin, pad, end = bio_tokens("dna")
    assert r.text == ("<|im_start|>system\nYou are a geneticist.<|im_end|>\n"
                      f"<|im_start|>user\nReference: {begin}{pad * 3}{end}\nQuestion: which disease?<|im_end|>\n"
                      f"<|im_start|>assistant\n{ASSISTANT}<|im_end|>\n")
    a, b = r.assistant_spans[0]
    assert r.text[a:b] == ASSISTANT + "<|im_end|>"
    assert r.bio_counts == [3]


def test_exactly_the_assistant_span_is_supervised(tok):
    bio, pads = ids_of(tok)
    r = render(messages(), lambda item: 5)
    enc = encode(r, tok, bio, pads)
    supervised = [t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX]
    assert tok.decode(supervised) == ASSISTANT + "<|im_end|>"
    # supervised tokens are one contiguous run and their labels are the tokens themselves
    idx = [i for i, lab in enumerate(enc.labels) if lab != IGNORE_INDEX]
    assert idx == list(range(idx[0], idx[-1] + 1))
    assert all(enc.labels[i] == enc.input_ids[i] for i in idx)
    # everything before is the prompt, and the trailing newline is not supervised
    assert tok.decode(enc.input_ids[:idx[0]]).endswith("<|im_start|>assistant\n")
    assert tok.decode(enc.input_ids[idx[-1] + 1:]) == "\n"


def test_two_assistant_turns_are_both_supervised(tok):
    bio, pads = ids_of(tok)
    msgs = messages("First answer.") + [{"role": "user", "content": "And?"},
                                        {"role": "assistant", "content": "Second answer."}]
    enc = encode(render(msgs, lambda item: 2), tok, bio, pads)
    sup = [t if lab != IGNORE_INDEX else None for t, lab in zip(enc.input_ids, enc.labels)]
    runs, cur = [], []
    for t in sup + [None]:
        if t is None and cur:
            runs.append(tok.decode(cur))
            cur = []
        elif t is not None:
            cur.append(t)
    assert runs == ["First answer.<|im_end|>", "Second answer.<|im_end|>"]


def test_truncation_cuts_text_from_the_right_and_never_bio_tokens(tok):
    bio, pads = ids_of(tok)
    r = render(messages(), lambda item: 40)
    full = encode(r, tok, bio, pads)
    n_bio = sum(t in bio for t in full.input_ids)
    assert n_bio == 42 and full.n_text_tokens == len(full.input_ids) - 42
    budget = full.n_text_tokens - 6
    cut = encode(r, tok, bio, pads, max_text_tokens=budget)
    assert cut.truncated and cut.n_text_tokens == budget
    assert sum(t == pads["dna"] for t in cut.input_ids) == 40
    assert cut.input_ids == full.input_ids[:len(cut.input_ids)]
    sup = tok.decode([t for t, lab in zip(cut.input_ids, cut.labels) if lab != IGNORE_INDEX])
    assert (ASSISTANT + "<|im_end|>").startswith(sup) and len(sup) < len(ASSISTANT)
    # a budget smaller than the prompt's text removes all supervision but keeps every bio token
    tiny = encode(r, tok, bio, pads, max_text_tokens=5)
    assert sum(t in bio for t in tiny.input_ids) == 42 and all(lab == IGNORE_INDEX for lab in tiny.labels)


def test_pad_count_mismatch_names_the_example(tok):
    bio, pads = ids_of(tok)
    r = render(messages(), lambda item: 4)
    r.bio_counts = [5]
    with pytest.raises(ValueError, match="example ex-7: 4 dna pad tokens .* 5 embeddings"):
        encode(r, tok, bio, pads, example_id="ex-7")


def test_bio_items_are_not_allowed_in_the_assistant_turn():
    with pytest.raises(ValueError, match="prompt"):
        render([{"role": "assistant", "content": [{"type": "dna", "sequence": "ACGT"}]}], lambda i: 1)
