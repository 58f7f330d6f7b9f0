"""The curated bibliography (references.bib, shipped with the backend) and the related-work
section, whose paragraphs are chosen by what the model really is: its family's graph (attention,
convolutions, normalisations), its task, its objectives and the data its spec names.

Sentences here describe the cited work and how this model relates to it; they never state a result
of the cited work or of this model.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

from .context import Paper
from .equations import is_grouped_query

__all__ = ["bib_for", "database", "related_work"]

_ENTRY = re.compile(r"^@(\w+)\{([A-Za-z0-9_:-]+),", re.MULTILINE)


@lru_cache(maxsize=1)
def database() -> dict[str, str]:
    """Citation key -> the entry's BibTeX text."""
    text = resources.files(__package__).joinpath("references.bib").read_text(encoding="utf-8")
    starts = [(m.start(), m.group(2)) for m in _ENTRY.finditer(text)]
    out = {}
    for i, (at, key) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        out[key] = text[at:end].strip() + "\n"
    return out


def bib_for(keys: list[str]) -> str:
    """references.bib of one paper: exactly the cited entries, in key order."""
    db = database()
    missing = [k for k in keys if k not in db]
    assert not missing, f"cited keys missing from the curated bibliography: {missing}"
    head = "% The references this paper cites, from metagenc's curated bibliography (no generated entries).\n\n"
    return head + "\n".join(db[k] for k in sorted(set(keys)))


def related_work(p: Paper) -> str:
    ops = p.ops
    short = {b.rsplit(".", 1)[-1] for b in p.tree.block_targets()}
    paras: list[str] = []

    # -- the architecture's lineage
    arch: list[str] = []
    if "sdpa" in ops:
        arch.append("Its attention layers follow the Transformer " + p.cite("vaswani2017attention") + ".")
    causal = any(a.get("causal") for a in ops.get("sdpa", []))
    if causal and "embedding" in ops:
        arch.append("Decoder-only language models trained to predict the next token were popularised by GPT-2 and "
                    "GPT-3 " + p.cite("radford2019language", "brown2020language") + ".")
        llama = [w for w, c in (("RMS normalisation", "rmsnorm" in ops), ("SwiGLU MLPs", "swiglu" in short),
                                ("rotary positions", "rope" in ops)) if c]
        if llama:
            arch.append("LLaMA " + p.cite("touvron2023llama") + " combined " + _join(llama)
                        + ", which this model uses as well.")
    if "cls_token" in ops and "sdpa" in ops:
        arch.append("Vision Transformers " + p.cite("dosovitskiy2021image")
                    + " apply a Transformer encoder to a sequence of image patches with a class token, as this model "
                      "does.")
    if "conv2d" in ops and "add" in ops and "batchnorm" in ops:
        units = [w for w, c in (("bottleneck", "bottleneck" in short), ("basic", "basic_block" in short)) if c]
        arch.append("Residual networks " + p.cite("he2016deep") + " made very deep convolutional networks "
                    + p.cite("lecun1998gradient") + " trainable with identity shortcuts and batch normalisation "
                    + p.cite("ioffe2015batch")
                    + (f"; this model is built from their {' and '.join(units)} blocks." if units else "."))
    if "selective_scan" in ops or "s4d" in ops:
        arch.append("Structured state-space sequence models " + p.cite("gu2022efficiently")
                    + " map a sequence through a linear recurrence that can also be run as a convolution; S4D "
                    + p.cite("gu2022parameterization") + " restricts the state matrix to a diagonal, and Mamba "
                    + p.cite("gu2023mamba") + " makes the step and the input and output maps depend on the input. "
                    + ("This model uses Mamba's selective scan." if "selective_scan" in ops
                       else "This model uses S4D layers."))
    if "moe" in ops:
        arch.append("Sparsely gated mixtures of experts " + p.cite("shazeer2017outrageously")
                    + " route each token to a few of many expert networks; GShard " + p.cite("lepikhin2021gshard")
                    + " and Switch Transformers " + p.cite("fedus2022switch")
                    + " dispatch tokens to experts under a capacity limit with a load-balancing loss, and Mixtral "
                    + p.cite("jiang2024mixtral") + " routes each token to two of eight SwiGLU experts per layer.")
    if arch:
        paras.append("\\paragraph{Architecture.} " + " ".join(arch))

    # -- components chosen by the graph
    comp: list[str] = []
    for cond, words, keys in (
        ("layernorm" in ops, "layer normalisation", ("ba2016layer",)),
        ("rmsnorm" in ops, "RMS normalisation", ("zhang2019root",)),
        ("gelu" in ops, "the GELU non-linearity", ("hendrycks2016gaussian",)),
        ("swiglu" in short, "gated (SwiGLU) MLPs", ("shazeer2020glu",)),
        ("rope" in ops, "rotary position embeddings", ("su2021roformer",)),
        (any(is_grouped_query(a) for a in ops.get("sdpa", [])), "grouped-query attention", ("ainslie2023gqa",)),
        (any(int(a.get("kv_heads") or 0) == 1 < int(a.get("heads") or 0) for a in ops.get("sdpa", [])),
         "multi-query attention", ("shazeer2019fast",)),
        (p.tied(), "tied input and output embeddings", ("press2017using",)),
        ("relu" in ops, "rectified linear units", ("nair2010rectified",)),
    ):
        if cond:
            comp.append(words + " " + p.cite(*keys))
    if comp:
        verb = "combine" if len(comp) > 1 else "use"
        paras.append(f"\\paragraph{{Components.}} The blocks {verb} " + _join(comp) + ".")

    # -- objectives and task
    obj: list[str] = []
    objectives = set(p.objectives())
    if "autoregressive" in objectives:
        obj.append("Training a network to predict the next token goes back to neural language models "
                   + p.cite("bengio2003neural") + ".")
    if "masked_lm" in objectives:
        obj.append("Masked language modelling was introduced with BERT " + p.cite("devlin2019bert") + ".")
    if "contrastive" in objectives:
        obj.append("The contrastive (InfoNCE) objective comes from contrastive predictive coding "
                   + p.cite("oord2018representation") + " and was used to align images and text in CLIP "
                   + p.cite("radford2021learning") + ".")
    if "diffusion" in objectives:
        obj.append("The denoising objective is that of diffusion probabilistic models "
                   + p.cite("ho2020denoising") + ".")
    task = p.report["task"]["name"]
    if task == "value_based":
        obj.append("Learning action values from frames with a convolutional network and a target network follows "
                   "DQN " + p.cite("mnih2015human") + "; the target is that of Double DQN "
                   + p.cite("vanhasselt2016deep") + ".")
    elif task == "actor_critic":
        obj.append("The clipped surrogate objective is that of proximal policy optimisation "
                   + p.cite("schulman2017proximal") + ".")
    elif task == "model_based":
        obj.append("Learning a model of the environment's transitions and rewards to plan with goes back to Dyna "
                   + p.cite("sutton1990integrated") + ".")
    elif "reinforcement" in objectives:
        obj.append("Policy-gradient training follows REINFORCE " + p.cite("williams1992simple") + ".")
    if task == "recommendation":
        obj.append("Two towers that embed users and items into one space, scored by a dot product, are the "
                   "retrieval stage of " + p.cite("covington2016deep") + "; the in-batch softmax over the batch's "
                   "items follows " + p.cite("yi2019sampling") + ", without its sampling-bias correction.")
    elif task == "ranking":
        obj.append("The pairwise logistic loss is that of RankNet " + p.cite("burges2005learning")
                   + "; lists are evaluated by normalised discounted cumulative gain "
                   + p.cite("jarvelin2002cumulated") + ".")
    if task == "retrieval_generation":
        obj.append("Generation conditioned on retrieved passages is retrieval-augmented generation "
                   + p.cite("lewis2020retrieval") + "; the retriever is a dual encoder scored by a dot product, as "
                   "dense passage retrieval " + p.cite("karpukhin2020dense") + ", and the reader encodes each "
                   "(question, passage) pair apart and decodes over all of them, as Fusion-in-Decoder "
                   + p.cite("izacard2021leveraging") + ".")
    if any("imagenet" in d.lower() for d in p.data_names()):
        obj.append("The specification names ImageNet " + p.cite("russakovsky2015imagenet") + " as its data.")
    if "autoregressive" in objectives or p.report["task"]["name"] == "generation":
        obj.append("Scaling studies relate a language model's loss to its parameters, data and compute "
                   + p.cite("kaplan2020scaling", "hoffmann2022training")
                   + "; this paper reports parameters and FLOPs so that such budgets can be compared, and measures "
                     "no loss.")
    if obj:
        paras.append("\\paragraph{Objectives and data.} " + " ".join(obj))

    # -- cost models
    cost = ["The latency estimates use the roofline model " + p.cite("williams2009roofline")
            + ", with the peak throughput and bandwidth of each device profile."]
    cost.append("Half-precision columns assume mixed-precision execution " + p.cite("micikevicius2018mixed") + ".")
    if "sdpa" in ops:
        cost.append("IO-aware attention kernels " + p.cite("dao2022flashattention")
                    + " avoid materialising the attention matrix; the estimate counts the memory traffic of each "
                      "graph node and does not model a particular kernel.")
    cost.append("The training-memory estimate keeps every activation autograd saves (no activation checkpointing "
                + p.cite("chen2016training") + ") and the two moments of AdamW "
                + p.cite("loshchilov2019decoupled", "kingma2015adam") + ".")
    paras.append("\\paragraph{Estimating cost.} " + " ".join(cost))

    # -- where the compiler sits
    paras.append(
        "\\paragraph{Compilers and architecture search.} Deep-learning compilers such as TVM "
        + p.cite("chen2018tvm") + " and MLIR " + p.cite("lattner2021mlir")
        + " lower a given model to hardware; metagenc works one level up, from a specification of what a model "
          "must do to the model itself, emitted as PyTorch " + p.cite("paszke2019pytorch")
        + ". Neural architecture search " + p.cite("zoph2017neural", "elsken2019neural") + " and AutoML "
        + p.cite("hutter2019automated") + " search such spaces with training in the loop; this compiler solves "
          "the open dimensions of a family against exact constraints and trains nothing.")
    paras.append(
        "\\paragraph{Documentation.} The model card beside this paper follows model cards "
        + p.cite("mitchell2019model") + "; the data a spec names deserve a datasheet " + p.cite("gebru2021datasheets")
        + ", which the compiler cannot write.")
    return "\\section{Related work}\\label{sec:related}\n\n" + "\n\n".join(paras) + "\n"


def _join(items: list[str]) -> str:
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
