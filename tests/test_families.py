"""Family members written with explicit dims get that member's exact parameter count, checked against
the reference implementation built from its config on the meta device (no weights, no downloads)."""

from __future__ import annotations

import pytest

from metagen_compiler.driver import compile_source
from metagen_compiler.span import SourceFile


def params_of(src: str) -> int:
    comp = compile_source(SourceFile("<test>", src))
    assert not comp.bag.has_errors, [d.message for d in comp.bag.sorted()]
    assert comp.graph is not None
    return comp.graph.param_count()


def hf_params(model: str, config: str, **dims: int) -> int:
    """Parameters of transformers' `model` built from its `config` class with `dims` (the rest its defaults), on the
    meta device."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        ref = getattr(transformers, model)(getattr(transformers, config)(**dims))
    return sum(p.numel() for p in ref.parameters())


def bert_dims(layers: int, d_model: int, heads: int, mlp_dim: int) -> dict[str, int]:
    """A BERT-style config's names for the dims."""
    return {"hidden_size": d_model, "num_hidden_layers": layers, "num_attention_heads": heads,
            "intermediate_size": mlp_dim}


def bert(layers: int, d_model: int, heads: int, mlp_dim: int, vocab: int = 30522) -> str:
    return f"""msl 1
import std.transformer
model m {{
  modality text -> embedding
  task embedding
  architecture transformer.encoder {{
    vocab = {vocab}; context = 512; layers = {layers}; d_model = {d_model}; heads = {heads}; mlp_dim = {mlp_dim}
  }}
}}
"""


@pytest.mark.parametrize("layers,d_model,heads,mlp_dim,published", [
    (12, 768, 12, 3072, 109_482_240),  # BERT-base
    (24, 1024, 16, 4096, 335_141_888),  # BERT-large
    (4, 256, 4, 1024, None),  # BERT-mini
])
def test_bert_members_equal_transformers(layers: int, d_model: int, heads: int, mlp_dim: int,
                                         published: int | None) -> None:
    ours = params_of(bert(layers, d_model, heads, mlp_dim))
    if published is not None:
        assert ours == published
    assert ours == hf_params("BertModel", "BertConfig", **bert_dims(layers, d_model, heads, mlp_dim))


@pytest.mark.parametrize("layers,d_model,heads,mlp_dim", [(12, 768, 12, 3072), (2, 128, 2, 512)])
def test_bert_question_answering_equals_transformers(layers: int, d_model: int, heads: int, mlp_dim: int) -> None:
    """The span head replaces the pooler, as in BertForQuestionAnswering (add_pooling_layer=False)."""
    src = bert(layers, d_model, heads, mlp_dim).replace("modality text -> embedding", "modality text -> text")
    ours = params_of(src.replace("task embedding", "task question_answering"))
    assert ours == hf_params("BertForQuestionAnswering", "BertConfig", **bert_dims(layers, d_model, heads, mlp_dim))


@pytest.mark.parametrize("layers,d_model,heads,mlp_dim", [(12, 768, 12, 3072), (2, 128, 2, 256)])
def test_layoutlm_equals_transformers(layers: int, d_model: int, heads: int, mlp_dim: int) -> None:
    """With the pooler (task embedding) LayoutLM equals transformers' LayoutLMModel; its x and y tables are each
    shared by both edges of a box. document_qa swaps the pooler for qa_outputs (transformers'
    LayoutLMForQuestionAnswering keeps the unused pooler as well)."""
    src = f"""msl 1
import std.document
model m {{
  modality text -> embedding
  task embedding
  architecture document.layoutlm {{ layers = {layers}; d_model = {d_model}; heads = {heads}; mlp_dim = {mlp_dim} }}
}}
"""
    ours = params_of(src)
    qa = params_of(src.replace("text -> embedding", "text -> text").replace("task embedding", "task document_qa"))
    dims = bert_dims(layers, d_model, heads, mlp_dim)
    assert ours == hf_params("LayoutLMModel", "LayoutLMConfig", **dims)
    pooler = d_model * d_model + d_model
    assert qa == hf_params("LayoutLMForQuestionAnswering", "LayoutLMConfig", **dims) - pooler


@pytest.mark.parametrize("cell,directions,layers", [("lstm", 1, 1), ("lstm", 2, 3), ("gru", 1, 2), ("gru", 2, 1)])
def test_recurrent_stack_equals_torch(cell: str, directions: int, layers: int) -> None:
    src = f"""msl 1
import std.rnn
model m {{
  modality time_series -> time_series
  task time_series_forecast {{ horizon = 4; lookback = 16 }}
  architecture rnn.rnn {{ features = 3; d_model = 32; hidden = 48; layers = {layers}; cell = {cell}; directions = {directions} }}
}}
"""
    ours = params_of(src)
    torch = pytest.importorskip("torch")
    rnn = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](32, 48, num_layers=layers, batch_first=True,
                                                             bidirectional=directions == 2)
    proj_in = 3 * 32 + 32
    head = 48 * directions * (4 * 3) + 4 * 3
    assert ours == proj_in + sum(p.numel() for p in rnn.parameters()) + head


def test_pytorch_lowering_covers_every_primitive_and_evaluates_inputs_once() -> None:
    """Each primitive is a module or a functional template; a template names each input once (an input
    is an expression, e.g. `self.fc(x)`, that would run twice)."""
    import re
    from collections import Counter

    from metagen_backends.pytorch.lowering import FUNCTIONAL, INPUT_NAMES, MODULES

    from metagen_compiler.primitives import PRIMITIVES

    assert set(MODULES) | set(FUNCTIONAL) == set(PRIMITIVES) and not set(MODULES) & set(FUNCTIONAL)
    for prim, tmpl in FUNCTIONAL.items():
        uses = Counter(re.findall(r"\{(\w+)\}", tmpl))
        for name in INPUT_NAMES.get(prim, ("x",)):
            assert uses[name] <= 1, (prim, tmpl)


def test_in_place_tables_agree_with_the_primitives() -> None:
    """An in-place form is a functional primitive's; an op whose output may be overwritten is a primitive
    that autograd does not keep the output of (its `saves`)."""
    from metagen_backends.pytorch.codegen import FRESH_OUTPUT
    from metagen_backends.pytorch.lowering import FUNCTIONAL, FUNCTIONAL_IN_PLACE

    from metagen_compiler.primitives import PRIMITIVES

    assert set(FUNCTIONAL_IN_PLACE) <= set(FUNCTIONAL)
    assert all(PRIMITIVES[p].saves in ("input", "first", "none") for p in FRESH_OUTPUT), FRESH_OUTPUT


def test_clip_preset_equals_transformers() -> None:
    src = """msl 1
import std.presets
model m {
  modality image, text -> embedding
  task multimodal_retrieval
  architecture clip_vit_b_32
}
"""
    ours = params_of(src)
    assert ours == 151_277_313
    assert ours == hf_params("CLIPModel", "CLIPConfig")  # the defaults are ViT-B/32's


@pytest.mark.parametrize("layers,decoder_layers,d_model,heads,d_kv,d_ff", [
    (6, 6, 512, 8, 64, 2048),  # t5-small
    (12, 12, 768, 12, 64, 3072),  # t5-base
    (4, 2, 256, 4, 32, 1024),  # uneven stacks, d_kv * heads != d_model
])
def test_t5_members_equal_transformers(layers: int, decoder_layers: int, d_model: int, heads: int, d_kv: int,
                                       d_ff: int) -> None:
    src = f"""msl 1
import std.seq2seq
model m {{
  modality text -> text
  task generation
  architecture seq2seq.t5 {{
    layers = {layers}; decoder_layers = {decoder_layers}; d_model = {d_model}; heads = {heads}; d_kv = {d_kv}; d_ff = {d_ff}
  }}
}}
"""
    ours = params_of(src)
    if (layers, d_model) == (6, 512):
        assert ours == 60_506_624
    assert ours == hf_params("T5Model", "T5Config", d_model=d_model, d_kv=d_kv, d_ff=d_ff, num_layers=layers,
                             num_decoder_layers=decoder_layers, num_heads=heads)


@pytest.mark.parametrize("dims,message", [
    ("buckets = 2", "buckets must be at least 4, got 2"),
    ("buckets = 32; max_distance = 8", "max_distance (8) must exceed the 8 exactly bucketed distances"),
])
def test_t5_bad_buckets_are_diagnosed(dims: str, message: str) -> None:
    src = f"""msl 1
import std.seq2seq
model m {{
  modality text -> text
  task generation
  architecture seq2seq.t5 {{ layers = 2; d_model = 128; {dims} }}
}}
"""
    comp = compile_source(SourceFile("<test>", src))
    assert [(d.code, message in d.message) for d in comp.bag.errors] == [("E206", True)]
