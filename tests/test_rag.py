"""Retrieval-augmented generation (std.rag): the retriever computes transformers' DPR encoders, the reader
computes T5 over each (question, passage) pair with the encoder states concatenated (Fusion-in-Decoder), the
top-k choice follows the scores, and the loss and metrics equal the sums written out here."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, load_module
from metagen_backends.pytorch.weights.runtime import load_checkpoint

from metagen_compiler.cli import main

SMALL = {"vocab": 97, "context": 8, "passage_length": 12, "num_passages": 5, "top_k": 3, "retriever_context": 16,
         "retriever_layers": 2, "retriever_d_model": 32, "retriever_heads": 2, "retriever_mlp": 64, "layers": 2,
         "decoder_layers": 2, "d_model": 64, "heads": 4, "d_kv": 16, "d_ff": 96, "buckets": 8, "max_distance": 12}


@pytest.fixture(scope="module")
def mod(tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("rag")
    assert main([str(ROOT / "examples" / "rag_fid.msl"), "-o", str(out)]) == 0
    return load_module(out / "rag_fid" / "model.py", "gen_rag_fid_test")


def _small(mod: Any, **over: Any) -> Any:
    return mod.build_model(dataclasses.replace(mod.Config(), **{**SMALL, **over})).eval()


def _view(parts: dict[str, torch.nn.Module]) -> torch.nn.Module:
    """A module holding parts of ours (the same parameters) under the dotted names a weight layout maps."""
    root = torch.nn.Module()
    for path, module in parts.items():
        *parents, name = path.split(".")
        node = root
        for p in parents:
            if p not in node._modules:
                node.add_module(p, torch.nn.Module())
            node = node._modules[p]
        node.add_module(name, module)
    return root


def _references(top_k: int) -> tuple[Any, Any, Any]:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(3)
    dpr = transformers.DPRConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=16, hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0)
    q, c = transformers.DPRQuestionEncoder(dpr).eval(), transformers.DPRContextEncoder(dpr).eval()
    t5 = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=97, d_model=64, d_kv=16, d_ff=96, num_layers=2, num_decoder_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=12, dropout_rate=0.0,
        feed_forward_proj="relu", tie_word_embeddings=True)).eval()
    return q, c, t5


def _load(mod: Any, top_k: int) -> tuple[Any, Any, Any, Any]:
    q, c, t5 = _references(top_k)
    ours = _small(mod, top_k=top_k)
    views = []  # parts of ours under a reference's names, each loaded through its layout: every tensor given
    for encoder, ref, prefix in ((ours.backbone.question_encoder, q, "question_encoder.bert_model."),
                                 (ours.backbone.passage_encoder, c, "ctx_encoder.bert_model.")):
        views.append(_view({"encoder": encoder.embeddings, "backbone.layer": encoder.encoder.layer}))  # a BertModel
        load_checkpoint(views[-1], {k.removeprefix(prefix): v for k, v in ref.state_dict().items()}, layout="bert")
    reader, shared = ours.backbone.reader, ours.encoder_target.shared
    views.append(_view({"encoder_text.shared": shared, "encoder_target.shared": shared,  # a T5 model
                        "head.lm_head": ours.head.lm.lm_head,
                        **{f"backbone.{n}": m for n, m in reader.named_children() if n != "shared"}}))
    load_checkpoint(views[-1], t5.state_dict(), layout="t5")
    assert reader.shared.weight is shared.weight is ours.head.lm.lm_head.weight  # tied
    given = {id(t) for view in views for t in view.state_dict(keep_vars=True).values()}
    assert given == {id(t) for t in ours.state_dict(keep_vars=True).values()}  # every tensor of ours
    return ours, q, c, t5


@pytest.mark.parametrize("top_k", [1, 3, 5])
def test_retriever_is_dpr_and_reader_is_fusion_in_decoder_over_t5(mod: Any, top_k: int) -> None:
    """Scores = DPRQuestionEncoder(q) . DPRContextEncoder(p) per candidate; logits = T5's decoder over the
    concatenated encoder states of [q; p] for the top_k candidates by score, best first (top_k = 1: T5 itself on
    the question followed by the best passage)."""
    ours, q, c, t5 = _load(mod, top_k)
    g = torch.Generator().manual_seed(0)
    for b, tq, tp, ta in ((2, 8, 12, 6), (3, 5, 9, 4)):
        question = torch.randint(0, 97, (b, tq), generator=g)
        passages = torch.randint(0, 97, (b, 5, tp), generator=g)
        target = torch.randint(0, 97, (b, ta), generator=g)
        with torch.no_grad():
            logits, scores = ours(question, passages, target)
            # no padding: transformers' DPR masks the pad id 0 unless given a mask; every token is attended here
            qv = q(input_ids=question, attention_mask=torch.ones_like(question)).pooler_output  # (b, d)
            flat = passages.flatten(0, 1)
            pv = c(input_ids=flat, attention_mask=torch.ones_like(flat)).pooler_output.unflatten(0, (b, 5))
            ref_scores = torch.einsum("bd,bpd->bp", qv, pv)
            assert torch.allclose(scores, ref_scores, atol=1e-5)
            best = ref_scores.argsort(-1, descending=True)[:, :top_k]
            states = []
            for i in range(top_k):
                pair = torch.cat((question, passages[torch.arange(b), best[:, i]]), dim=1)
                states.append(t5.encoder(input_ids=pair).last_hidden_state)
            ref = t5(encoder_outputs=(torch.cat(states, dim=1),), decoder_input_ids=target).logits
            assert torch.allclose(logits, ref, atol=1e-5)
            if top_k == 1:
                pair = torch.cat((question, passages[torch.arange(b), best[:, 0]]), dim=1)
                assert torch.allclose(logits, t5(input_ids=pair, decoder_input_ids=target).logits, atol=1e-5)


def test_loss_and_metrics_are_the_sums(mod: Any) -> None:
    model = _small(mod)
    batch = mod.example_batch(model, batch_size=4)
    assert batch["passages"].shape == (4, 5, 12) and batch["positive"].shape == (4,)
    tokens, positive = batch["target"], batch["positive"]
    with torch.no_grad():
        logits, scores = model(batch["text"], batch["passages"], tokens[:, :-1])
        nll = np.mean([-F.log_softmax(logits[i, t], -1)[tokens[i, t + 1]].item()
                       for i in range(4) for t in range(tokens.shape[1] - 1)])
        retrieval = np.mean([-F.log_softmax(scores[i], -1)[positive[i]].item() for i in range(4)])
        model.config.retrieval_weight = 0.5
        assert abs(model.loss(batch).item() - (nll + 0.5 * retrieval)) < 1e-4
        m = model.metrics(batch)
    assert abs(m["perplexity"].item() - np.exp(nll)) < 1e-3 * np.exp(nll)
    hits = [int(scores[i].argmax()) == int(positive[i]) for i in range(4)]
    assert m["retrieval_recall_at_1"].item() == sum(hits) / 4
    correct = [(logits[i, t].argmax() == tokens[i, t + 1]).item() for i in range(4) for t in range(tokens.shape[1] - 1)]
    assert abs(m["token_accuracy"].item() - np.mean(correct)) < 1e-6


def test_the_retriever_learns_from_the_retrieval_loss_only(mod: Any) -> None:
    """The top-k choice is an index: the answer's loss sends no gradient to the retriever; the retrieval loss
    reaches both encoders."""
    model = _small(mod).train()
    batch = mod.example_batch(model, batch_size=2)
    model.config.retrieval_weight = 0.0
    model.loss(batch).backward()
    retriever = [p for n, p in model.named_parameters() if "question_encoder" in n or "passage_encoder" in n]
    assert all(p.grad is None or not p.grad.any() for p in retriever)
    model.zero_grad()
    model.config.retrieval_weight = 1.0
    model.loss(batch).backward()
    for enc in ("question_encoder", "passage_encoder"):
        assert any(p.grad is not None and p.grad.any() for n, p in model.named_parameters() if enc in n)


def test_onnx_other_passage_length(tmp_path: Path) -> None:
    """The exported graph takes passages of another length (a named dim) and another batch than the nominal."""
    ort = pytest.importorskip("onnxruntime")
    from metagen_backends.onnx import emit
    from metagen_backends.onnx.weights import import_weights
    from metagen_backends.pytorch import emit as emit_py
    from test_onnx import _compile, _write

    comp = _compile(ROOT / "examples" / "rag_fid.msl", SMALL)
    _write({**emit_py(comp), **emit(comp)}, tmp_path)
    gen = load_module(tmp_path / "model.py", "gen_rag_fid_onnx")
    model = gen.build_model().eval()
    path = import_weights(tmp_path, model.state_dict(), tmp_path / "trained.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(5)
    xs = (torch.randint(0, 97, (2, 6), generator=g), torch.randint(0, 97, (2, 5, 7), generator=g),
          torch.randint(0, 97, (2, 4), generator=g))
    with torch.no_grad():
        ref = model(*xs)
    got = sess.run(None, {i.name: x.numpy() for i, x in zip(sess.get_inputs(), xs, strict=True)})
    assert [o.name for o in sess.get_outputs()] == ["logits", "retrieval_scores"]
    for r, o in zip(ref, got, strict=True):
        assert r.shape == o.shape and float(np.abs(r.numpy() - o).max()) < 2e-5
