"""Bio text corpus reading and packing (biopost/data/text.py): exact, resumable, validated."""
import gzip
import json
import os

import pytest

from biopost.data.text import (BlockStream, TextDataError, TextSource, count_tokens, discover_shards,
                               make_encoder, pack, read_documents, separator_id)
from biopost.paths import RESOURCES


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    # The tiny model materializes under a test-private cache, never the user's.
    cache = tmp_path_factory.getbasetemp() / "biopost_cache_cpt"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BIOPOST_CACHE_DIR", str(cache))
        from transformers import AutoTokenizer

        from biopost.tiny import resolve_model_path
        yield AutoTokenizer.from_pretrained(resolve_model_path("biopost-tiny/qwen3"))


def heldout_texts(n):
    with gzip.open(RESOURCES / "bio_text" / "heldout.jsonl.gz", "rt") as fh:
        return [json.loads(line)["text"] for line, _ in zip(fh, range(n))]


@pytest.fixture
def two_shards(tmp_path):
    """Real biology documents split over a plain and a gzipped shard (read in sorted path order)."""
    texts = heldout_texts(120)
    corpus = tmp_path / "corpus"
    (corpus / "b").mkdir(parents=True)
    with open(corpus / "a.jsonl", "w") as fh:
        for t in texts[:70]:
            fh.write(json.dumps({"text": t, "id": "x"}) + "\n")
        fh.write("\n")  # a blank line is not a row
    with gzip.open(corpus / "b" / "c.jsonl.gz", "wt") as fh:
        for t in texts[70:]:
            fh.write(json.dumps({"text": t}) + "\n")
    (corpus / "README.md").write_text("not a shard")
    return corpus, texts


def drain(stream, n):
    blocks = []
    while True:
        got = stream.take(n)
        if got is None:
            return blocks
        blocks += got


def test_packing_is_exact_and_documents_are_separated_by_endoftext(tokenizer, two_shards):
    corpus, texts = two_shards
    encode, sep = make_encoder(tokenizer), separator_id(tokenizer)
    assert sep == tokenizer.convert_tokens_to_ids("<|endoftext|>") != tokenizer.eos_token_id  # eos is <|im_end|>
    docs = encode(texts)
    expected = [t for ids in docs for t in ids + [sep]]
    T = 37  # prime, so blocks cut documents at many different offsets
    stream = BlockStream(TextSource(str(corpus)), encode, sep, T)
    blocks = drain(stream, 3)
    flat = [t for b in blocks for t in b]
    assert all(len(b) == T for b in blocks)
    # Only whole batches of 3 blocks are emitted; what is dropped is the pass's tail, nothing else.
    n_full = len(expected) // T
    assert len(blocks) == n_full - n_full % 3
    assert flat == expected[:len(flat)]
    assert len(expected) - len(flat) < 3 * T
    # Split the token stream at the separators: exactly the tokenized documents come back, in order.
    pieces, cur = [], []
    for t in flat:
        if t == sep:
            pieces.append(cur)
            cur = []
        else:
            cur.append(t)
    assert pieces == docs[:len(pieces)] and len(pieces) >= len(docs) - 4
    # The pure packer agrees with the streaming one, and its remainder is everything else.
    full, remainder = pack(docs, T, sep)
    assert [t for b in full for t in b] + remainder == expected
    assert full[:len(blocks)] == blocks and len(remainder) < T
    # The token count used to size a run matches.
    assert count_tokens(TextSource(str(corpus)), encode) == {"documents": len(texts), "tokens": len(expected),
                                                             "skipped": 0}


def test_stream_state_resumes_exactly_mid_document_and_across_passes(tokenizer, two_shards):
    corpus, _ = two_shards
    encode, sep = make_encoder(tokenizer), separator_id(tokenizer)
    source = TextSource(str(corpus))
    start = read_documents(source, 5)[1]  # pretend the first 5 documents are held out
    assert start == (0, 5)
    ref = BlockStream(source, encode, sep, 11, start=start)
    n = 400
    expected = [ref.take(9) for _ in range(n)]  # several passes (None marks a pass end)
    ends = [i for i, x in enumerate(expected) if x is None]
    assert len(ends) >= 2 and ends[1] - ends[0] == ends[0] + 1  # every pass has the same length
    for cut in (1, 7, ends[0] - 1, ends[0], ends[0] + 1, ends[0] + 2, n - 3):
        s = BlockStream(source, encode, sep, 11, start=start)
        got = [s.take(9) for _ in range(cut)]
        state = json.loads(json.dumps(s.state()))  # what a checkpoint stores
        if cut == 7:
            assert state["buffer"] and state["line"] > 5  # mid-document, with tokens pending
        resumed = BlockStream(source, encode, sep, 11, start=start, state=state)
        got += [resumed.take(9) for _ in range(n - cut)]
        assert got == expected, f"resume after {cut} takes diverged"
    # Every pass is the corpus after the held-out documents: their tokens never reach training.
    rest = [t for ids in encode([d.text for d in source.documents(*start)]) for t in ids + [sep]]
    first_pass = [t for b in drain(BlockStream(source, encode, sep, 11, start=start), 9) for t in b]
    assert first_pass == rest[:len(first_pass)] and len(rest) - len(first_pass) < 10 * 11
    passes = [t for blocks in expected[:expected.index(None)] for b in blocks for t in b]
    assert passes == first_pass


def test_special_token_text_in_a_document_is_plain_text(tokenizer):
    encode, sep = make_encoder(tokenizer), separator_id(tokenizer)
    (ids,) = encode(["ATP binding <|endoftext|> GTP binding"])
    assert sep not in ids
    assert tokenizer.decode(ids) == "ATP binding <|endoftext|> GTP binding"


def test_separator_falls_back_to_eos_without_endoftext():
    class Tok:
        eos_token_id = 7

        def get_vocab(self):
            return {"</s>": 7, "a": 8}

    assert separator_id(Tok()) == 7
    Tok.eos_token_id = None
    with pytest.raises(TextDataError, match="eos_token"):
        separator_id(Tok())


@pytest.mark.parametrize("line, message", [
    ('{"txt": "kinase"}', "field 'text': missing"),
    ('{"text": 42}', "field 'text': expected a string, got int"),
    ('{"text": null}', "field 'text': expected a string, got NoneType"),
    ('{"text": "  "}', "field 'text': empty text"),
    ('["text"]', "expected a JSON object"),
    ('{"text": "unterminated', "not valid JSON"),
])
def test_bad_row_error_names_file_line_and_field(tmp_path, line, message):
    path = tmp_path / "shard.jsonl"
    path.write_text('{"text": "DNA repair"}\n\n' + line + '\n{"text": "nucleus"}\n')
    with pytest.raises(TextDataError) as e:
        list(TextSource(str(path)).documents())
    assert f"{path}, line 3" in str(e.value) and message in str(e.value)
    # With skip_invalid the row is skipped and counted, not silently lost.
    docs = list(TextSource(str(path), skip_invalid=True).documents())
    assert [d.text for d in docs] == ["DNA repair", None, "nucleus"] and message in docs[1].error
    stream = BlockStream(TextSource(str(path), skip_invalid=True), lambda texts: [[1] * len(t) for t in texts], 0,
                         4, warn=lambda msg: None)
    drain(stream, 1)
    assert stream.skipped == 1


def test_shard_discovery(tmp_path, two_shards):
    corpus, _ = two_shards
    assert [p.relative_to(corpus).as_posix() for p in discover_shards(corpus)] == ["a.jsonl", "b/c.jsonl.gz"]
    shipped = discover_shards("biopost:bio_text/train")
    assert [p.name for p in shipped] == [f"bio_text-{i:05d}.jsonl.gz" for i in range(3)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextDataError, match="no \\*.jsonl"):
        discover_shards(tmp_path / "empty")
    with pytest.raises(TextDataError, match="no such file"):
        TextSource(str(tmp_path / "missing.jsonl"))
    assert os.path.isabs(TextSource("biopost:bio_text/heldout.jsonl.gz").describe().split(" ")[0])


def test_committed_corpus_is_disjoint_and_valid():
    held = {json.dumps(t) for t in heldout_texts(10_000)}
    train = [d.text for d in TextSource("biopost:bio_text/train").documents()]
    assert len(held) == 300 and len(train) == 4800
    assert not held & {json.dumps(t) for t in train}


def test_hf_dataset_source_streams_resumes_and_validates(tmp_path):
    pytest.importorskip("datasets")
    rows = [{"text": f"gene {i} encodes a kinase"} for i in range(6)] + [{"body": "x"}]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # "json" + data_files goes through datasets' streaming loader exactly as a hub dataset would.
    source = TextSource("json", hf_data_files=str(path))
    assert source.hf is not None and "streaming" in source.describe()
    docs = []
    with pytest.raises(TextDataError) as e:
        for d in source.documents():
            docs.append(d)
    assert [d.text for d in docs] == [r["text"] for r in rows[:6]] and [d.line for d in docs] == list(range(6))
    assert f"({path}) [train], row 7, field 'text'" in str(e.value)
    resumed = [d.text for d in TextSource("json", hf_data_files=str(path), skip_invalid=True).documents(0, 4)]
    assert resumed == [rows[4]["text"], rows[5]["text"], None]
