"""The shared generation loop on transformers' Cache API: a cache the loop creates and the decoder
fills in place, under the keyword this transformers version takes (`cache` from 5.24, before that
`past_key_values`), with no deprecation warning; the `hf` engine equals the loop; batched decoding
equals one prompt at a time; sampling is reproducible for a seed. Runs on every transformers
version requirements.txt allows (the CI stack and, by hand, the lowest bound)."""
import warnings

import pytest
import torch

from biopost.data.examples import encode_prompt
from biopost.encoders.cache import EmbeddingCache
from biopost.eval.run import cache_lookup
from biopost.generate.engine import ENGINES, build_engine
from biopost.generate.sampling import SamplingConfig, _cache_kwarg, generate
from biopost.model.bio_model import BioReasoningModel, ModelSpec
from biopost.tasks import get_task

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def one_thread(one_torch_thread):
    """Every test here runs torch on one thread (see conftest.one_torch_thread)."""


@pytest.fixture(scope="module")
def setup(biopost_cache):
    from bioreason.synth_kegg import SynthConfig
    from bioreason.synth_kegg import generate as synth
    torch.manual_seed(0)
    spec = ModelSpec(text_model_name="biopost-tiny/qwen3", lora_rank=4,
                     encoders={"dna": {"model_name": "biopost-tiny/nt-6mer", "layer": "-1", "backend": "hf"}},
                     projectors={"dna": "linear"})
    model = BioReasoningModel.build(spec).eval()
    task = get_task("kegg")
    rows = synth(SynthConfig(seed=3, sizes={"train": 6}))["train"]
    rows[1]["question"] = rows[1]["question"] + " Think step by step about the pathway network first."
    examples = [encode_prompt(model, task, r) for r in rows]
    caches = {m: EmbeddingCache(enc, biopost_cache) for m, enc in model.encoders.items()}
    return model, examples, cache_lookup(caches)


def test_the_loop_uses_the_cache_keyword_of_this_transformers_version(setup):
    import inspect

    import transformers
    model, examples, emb = setup
    backbone = model.base_llm().model
    params = inspect.signature(type(backbone).forward).parameters
    assert _cache_kwarg(type(backbone).forward) == ("cache" if "cache" in params else "past_key_values")
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    assert (_cache_kwarg(type(backbone).forward) == "cache") == ((major, minor) >= (5, 24))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)   # e.g. "`past_key_values` is deprecated"
        warnings.simplefilter("error", DeprecationWarning)
        out = generate(model, examples[:2], emb, SamplingConfig(max_new_tokens=6))
    assert len(out) == 2 and all(len(o.tokens) >= 1 for o in out)


def test_batched_greedy_equals_one_prompt_at_a_time(setup):
    model, examples, emb = setup
    assert len({len(e.input_ids) for e in examples}) > 1          # left padding is exercised
    batched = generate(model, examples, emb, SamplingConfig(max_new_tokens=12))
    single = [generate(model, [e], emb, SamplingConfig(max_new_tokens=12))[0] for e in examples]
    assert [b.tokens for b in batched] == [s.tokens for s in single]


def test_sampling_is_reproducible_for_a_seed_and_differs_across_seeds(setup):
    model, examples, emb = setup
    cfg = dict(max_new_tokens=12, do_sample=True, temperature=1.5, top_k=50)
    a = generate(model, examples, emb, SamplingConfig(seed=7, **cfg))
    b = generate(model, examples, emb, SamplingConfig(seed=7, **cfg))
    c = generate(model, examples, emb, SamplingConfig(seed=8, **cfg))
    assert [x.tokens for x in a] == [x.tokens for x in b]
    assert [x.tokens for x in a] != [x.tokens for x in c]


def test_the_hf_engine_is_the_loop(setup):
    model, examples, emb = setup
    engine = build_engine("hf", model, emb)
    for sampling in (SamplingConfig(max_new_tokens=10), SamplingConfig(max_new_tokens=10, do_sample=True, seed=1)):
        assert [g.tokens for g in engine.generate(examples, sampling)] == \
            [g.tokens for g in generate(model, examples, emb, sampling)]
    engine.sync_weights(model)
    assert engine.model is model
    from biopost.errors import NotRegisteredError
    with pytest.raises(NotRegisteredError, match="unknown generation engine .vllm.; registered: auto, hf, static"):
        ENGINES.get("vllm")


# ------------------------------------------------------------------ the static engine (CPU fallback)

@pytest.mark.parametrize("sampling", [SamplingConfig(max_new_tokens=40),
                                      SamplingConfig(max_new_tokens=40, do_sample=True, temperature=0.9, top_k=50,
                                                     top_p=0.95, seed=11)],
                         ids=["greedy", "sampled"])
def test_static_engine_gives_the_hf_engines_tokens(setup, sampling):
    """Same prompts (left-padded, bio embeddings spliced), same tokens, greedy and sampled with one
    seed: a static cache with a masked tail and an owned decode step change nothing. Two calls on
    one engine reuse its bucket (the cache is reset between calls)."""
    model, examples, emb = setup
    hf = build_engine("hf", model, emb)
    static = build_engine("static", model, emb, length_bucket=64)
    want = hf.generate(examples, sampling)
    for _ in range(2):
        got = static.generate(examples, sampling)
        assert [g.tokens for g in got] == [w.tokens for w in want]
        assert [g.text for g in got] == [w.text for w in want]
        assert [g.stopped for g in got] == [w.stopped for w in want]
    assert len(static.buckets) == 1 and static.captures == 0   # no graphs on CPU
    assert sum(len(w.tokens) for w in want) > 5 * len(want)     # real generations, not empty ones


def test_static_engine_length_buckets_and_a_new_model_drop_its_state(setup):
    model, examples, emb = setup
    static = build_engine("static", model, emb, length_bucket=16)
    static.generate(examples[:2], SamplingConfig(max_new_tokens=4))
    static.generate(examples[:2], SamplingConfig(max_new_tokens=40))
    assert len(static.buckets) == 2
    first, second = list(static.buckets)
    static.generate(examples[:2], SamplingConfig(max_new_tokens=4))          # reuses, now most recent
    assert list(static.buckets) == [second, first]
    static.generate(examples[:2], SamplingConfig(max_new_tokens=100))        # a third: the oldest goes
    assert len(static.buckets) == 2 and second not in static.buckets
    static.sync_weights(model)          # the same module: buckets stay
    assert len(static.buckets) == 2
    static.sync_weights(BioReasoningModel.build(model.spec).eval())
    assert static.buckets == {}


def test_auto_is_hf_on_cpu(setup):
    """The default engine everywhere is `auto`: the static engine on CUDA, the reference on CPU."""
    from biopost.generate.engine import HFEngine
    from biopost.train.grpo import GRPOConfig
    from biopost.train.sft import SFTConfig
    model, examples, emb = setup
    assert isinstance(build_engine("auto", model, emb, device="cpu"), HFEngine)
    assert GRPOConfig().engine == SFTConfig().engine == "auto"
