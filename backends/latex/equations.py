"""The equations of the blocks a model really uses, and of its training objectives.

Each entry is chosen by what the graph contains (primitive ops and their arguments, block
definitions) or by the objectives the spec names, never by the family's name alone. The text is
fixed LaTeX written here; nothing from a spec is interpolated except through the escapers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from metagen_compiler.primitives import PRIMITIVES

from .escape import rm, tt

__all__ = [
    "OBJECTIVE_NAMES",
    "PLUMBING",
    "Equation",
    "component_equations",
    "is_grouped_query",
    "objective_equations",
    "other_operations",
]


@dataclass(frozen=True)
class Equation:
    title: str
    text: str  # a sentence or two, then the display math
    cites: tuple[str, ...] = ()
    ops: tuple[str, ...] = ()  # the primitive ops of the graph this equation describes


Ops = dict[str, list[dict[str, Any]]]


def _any(ops: Ops, op: str, pred: Callable[[dict[str, Any]], bool] = lambda a: True) -> bool:
    return any(pred(a) for a in ops.get(op, []))


def is_grouped_query(a: dict[str, Any]) -> bool:
    """Grouped-query attention: fewer key/value heads than query heads."""
    heads = int(a.get("heads") or 0)
    return 0 < int(a.get("kv_heads") or heads) < heads


def component_equations(ops: Ops, blocks: set[str], tied: bool) -> list[Equation]:
    """The building blocks present in the graph, in the order a reader meets them."""
    out: list[Equation] = []
    short = {b.rsplit(".", 1)[-1] for b in blocks}
    if "embedding" in ops:
        text = ("Token ids $x_t$ index a learned table $E \\in \\mathbb{R}^{V \\times d}$"
                + (", and a learned position table $P$ is added" if "pos_embedding" in ops else "") + ":\n"
                "\\begin{equation*}\n  h^{(0)}_t = E_{x_t}"
                + (" + P_t" if "pos_embedding" in ops else "") + ".\n\\end{equation*}")
        if tied:
            text += ("\nThe output projection reuses $E$ (tied weights), so the vocabulary matrix is stored and "
                     "counted once.")
        out.append(Equation("Embedding", text, ("press2017using",) if tied else (), ("embedding", "pos_embedding")))
    if "cls_token" in ops and "conv2d" in ops:
        out.append(Equation(
            "Patch embedding",
            "The image is cut into non-overlapping $p \\times p$ patches by a convolution with kernel and stride $p$; "
            "a learned class token is prepended and learned positions are added:\n"
            "\\begin{equation*}\n  h^{(0)} = [\\,x_{\\mathrm{cls}};\\ x^1_p W;\\ \\dots;\\ x^N_p W\\,] + P.\n"
            "\\end{equation*}",
            ("dosovitskiy2021image",), ("cls_token", "pos_embedding")))
    if "conv2d" in ops:
        out.append(Equation(
            "Convolution",
            "A 2-D convolution with $C_{\\mathrm{in}}$ input and $C_{\\mathrm{out}}$ output channels, kernel $k$:\n"
            "\\begin{equation*}\n  y_{o,i,j} = b_o + \\sum_{c=1}^{C_{\\mathrm{in}}} \\sum_{u,v=0}^{k-1} "
            "W_{o,c,u,v}\\, x_{c,\\, s i + u - p,\\, s j + v - p},\n\\end{equation*}\n"
            "with stride $s$ and zero padding $p$; it costs $2 C_{\\mathrm{in}} k^2$ FLOPs per output element.",
            ("lecun1998gradient",), ("conv2d",)))
    if "conv_transpose2d" in ops:
        out.append(Equation(
            "Transposed convolution",
            "The decoder upsamples with transposed convolutions, the adjoint of a strided convolution: each input "
            "pixel adds its $k \\times k$ filter, scaled by its value, to the output at $s$ times its position; "
            "it costs $2 C_{\\mathrm{out}} k^2$ FLOPs per input element."))
    if "layernorm2d" in ops or "layer_scale" in ops:
        out.append(Equation(
            "ConvNeXt block",
            "A $7 \\times 7$ depthwise convolution mixes space, a LayerNorm over the channels of each position "
            "and an inverted-bottleneck MLP mix channels, and a learned per-channel scale $\\gamma$ (starting "
            "at $10^{-6}$) weights the branch:\n"
            "\\begin{equation*}\n  x_{\\ell+1} = x_\\ell + \\gamma \\odot W_2\\,\\mathrm{GELU}\\!\\left(W_1\\,"
            "\\mathrm{LN}(\\mathrm{DWConv}_{7 \\times 7}(x_\\ell))\\right).\n\\end{equation*}",
            ("liu2022convnet",)))
    if "max" in ops:
        out.append(Equation(
            "Symmetric pooling over points",
            "Every point $x_i$ passes through the same MLP $h$ and a maximum over the points gives one feature per "
            "set, whatever the order of the points"
            + (", after a learned transform $T(X)$ (a small PointNet, initialised at the identity) has moved "
               "them" if "matmul" in ops else "") + ":\n"
            "\\begin{equation*}\n  g(X) = \\max_{i=1}^{N} h\\big("
            + ("x_i T(X)" if "matmul" in ops else "x_i") + "\\big).\n\\end{equation*}",
            ("qi2017pointnet",)))
    if "reparameterize" in ops:
        out.append(Equation(
            "Variational code",
            "The encoder gives a mean $\\mu$ and a log-variance $\\log \\sigma^2$ per latent dimension; the code "
            "is sampled as $z = \\mu + \\sigma \\odot \\epsilon$, $\\epsilon \\sim \\mathcal{N}(0, I)$ (the mean at "
            "inference), and the loss adds the divergence from the prior, per input element ($D$):\n"
            "\\begin{equation*}\n  \\mathcal{L} = \\mathcal{L}_{\\mathrm{rec}} + \\frac{\\beta}{D}\\,"
            "\\mathrm{KL}\\big(q(z \\mid x)\\,\\Vert\\,\\mathcal{N}(0, I)\\big), \\qquad "
            "\\mathrm{KL} = -\\tfrac{1}{2}\\sum_j \\left(1 + \\log \\sigma_j^2 - \\mu_j^2 - \\sigma_j^2\\right).\n"
            "\\end{equation*}",
            ("kingma2014auto",)))
    if "batchnorm" in ops:
        out.append(Equation(
            "Batch normalisation",
            "Per channel, with batch statistics in training and running averages at inference:\n"
            "\\begin{equation*}\n  \\mathrm{BN}(x) = \\gamma \\frac{x - \\mu_{\\mathcal{B}}}"
            "{\\sqrt{\\sigma^2_{\\mathcal{B}} + \\epsilon}} + \\beta.\n\\end{equation*}",
            ("ioffe2015batch",), ("batchnorm",)))
    if "layernorm" in ops:
        out.append(Equation(
            "Layer normalisation",
            "Over the feature dimension of each position:\n"
            "\\begin{equation*}\n  \\mathrm{LN}(x) = \\gamma \\odot "
            "\\frac{x - \\mu(x)}{\\sqrt{\\sigma^2(x) + \\epsilon}}"
            + (" + \\beta" if _any(ops, "layernorm", lambda a: bool(a.get("bias", True))) else "")
            + ".\n\\end{equation*}",
            ("ba2016layer",), ("layernorm",)))
    if "rmsnorm" in ops:
        out.append(Equation(
            "RMS normalisation",
            "Rescaling by the root mean square only, without centring or bias:\n"
            "\\begin{equation*}\n  \\mathrm{RMSNorm}(x) = \\gamma \\odot \\frac{x}{\\sqrt{\\tfrac{1}{d}\\sum_i x_i^2 + "
            "\\epsilon}}.\n\\end{equation*}",
            ("zhang2019root",), ("rmsnorm",)))
    if "sdpa" in ops:
        causal = _any(ops, "sdpa", lambda a: bool(a.get("causal")))
        grouped = _any(ops, "sdpa", is_grouped_query)
        text = ("Scaled dot-product attention over $H$ heads of width $d_h = d/H$"
                + (", with a causal mask ($M_{ij} = -\\infty$ for $j > i$, else 0)" if causal else "") + ":\n"
                "\\begin{equation*}\n  \\mathrm{Attn}(Q, K, V) = \\mathrm{softmax}\\!\\left("
                "\\frac{Q K^{\\top}}{\\sqrt{d_h}}" + (" + M" if causal else "") + "\\right) V,\n"
                "\\end{equation*}\nthe heads are concatenated and projected by $W_O$.")
        cites: tuple[str, ...] = ("vaswani2017attention",)
        if grouped:
            text += (" Keys and values have fewer heads than queries (grouped-query attention): each key/value head "
                     "serves a group of query heads, which shrinks the key/value projections and cache.")
            cites += ("ainslie2023gqa",)
        out.append(Equation("Attention", text, cites, ("sdpa",)))
    if "rope" in ops:
        out.append(Equation(
            "Rotary positions",
            "Queries and keys are rotated pairwise by position-dependent angles $\\theta_i = b^{-2i/d_h}$ "
            "(no position table):\n"
            "\\begin{equation*}\n  \\begin{pmatrix} q'_{2i} \\\\ q'_{2i+1} \\end{pmatrix} = "
            "\\begin{pmatrix} \\cos t\\theta_i & -\\sin t\\theta_i \\\\ \\sin t\\theta_i & \\cos t\\theta_i "
            "\\end{pmatrix} \\begin{pmatrix} q_{2i} \\\\ q_{2i+1} \\end{pmatrix},\n\\end{equation*}\n"
            "so that $q'^{\\top}_t k'_s$ depends on $t - s$ only.",
            ("su2021roformer",), ("rope",)))
    if "swiglu" in short:
        out.append(Equation(
            "Gated MLP (SwiGLU)",
            "\\begin{equation*}\n  \\mathrm{MLP}(x) = W_2\\left(\\mathrm{SiLU}(W_1 x) \\odot W_3 x\\right), \\qquad "
            "\\mathrm{SiLU}(z) = z\\,\\sigma(z).\n\\end{equation*}",
            ("shazeer2020glu", "elfwing2018sigmoid"), ("silu", "mul")))
    if "gelu_mlp" in short or ("gelu" in ops and "swiglu" not in short):
        approx = _any(ops, "gelu", lambda a: str(a.get("approximate", "none")) == "tanh")
        gelu = ("\\tfrac{1}{2} z\\left(1 + \\tanh\\!\\left[\\sqrt{2/\\pi}\\,(z + 0.044715 z^3)\\right]\\right)"
                if approx else "z\\,\\Phi(z)")
        out.append(Equation(
            "MLP",
            "A two-layer MLP with a GELU" + (" (tanh approximation)" if approx else "") + " non-linearity:\n"
            "\\begin{equation*}\n  \\mathrm{MLP}(x) = W_2\\,\\mathrm{GELU}(W_1 x + b_1) + b_2, \\qquad "
            f"\\mathrm{{GELU}}(z) = {gelu}.\n\\end{{equation*}}",
            ("hendrycks2016gaussian",), ("gelu",)))
    if "selective_scan" in ops:
        out.append(Equation(
            "Selective state space (Mamba)",
            "Each of the mixer's channels keeps a state of size $N$. The step $\\Delta_t$ and the maps $B_t, C_t \\in "
            "\\mathbb{R}^N$ are projections of the input, and the diagonal $A = -\\exp(A_{\\log})$ is discretised by "
            "zero-order hold:\n"
            "\\begin{equation*}\n  h_t = \\exp(\\Delta_t A)\\, h_{t-1} + \\Delta_t B_t x_t, \\qquad "
            "y_t = C_t^{\\top} h_t + D x_t, \\qquad \\Delta_t = \\mathrm{softplus}(W_\\Delta x_t + b_\\Delta).\n"
            "\\end{equation*}\n"
            "Before the scan, a causal depthwise convolution mixes each channel's last few positions; after it, the "
            "output is gated by $\\mathrm{SiLU}(z)$ of a second projection. The scan has no matrix product and counts "
            "under other FLOPs.",
            ("gu2023mamba",)))
    if "s4d" in ops:
        out.append(Equation(
            "Diagonal state space (S4D)",
            "Each channel has $N/2$ complex modes $A_n$ with output weights $C_n$ and a step $\\Delta$; the layer is "
            "a causal convolution whose kernel is as long as the sequence:\n"
            "\\begin{equation*}\n  K_\\ell = 2\\,\\mathrm{Re} \\sum_{n} C_n \\frac{\\exp(\\Delta A_n) - 1}{A_n}\\, "
            "\\exp(\\ell \\Delta A_n), \\qquad y_t = \\sum_{\\ell=0}^{t} K_\\ell\\, x_{t-\\ell} + D x_t.\n"
            "\\end{equation*}\n"
            "The convolution is computed directly, which costs $2T^2$ FLOPs per channel and sequence.",
            ("gu2022parameterization",)))
    if "moe" in ops:
        renorm = _any(ops, "moe", lambda a: bool(a.get("normalize")))
        out.append(Equation(
            "Mixture of experts",
            "A linear router gives probabilities $p = \\mathrm{softmax}(W_r x)$ over $E$ SwiGLU experts; each token "
            "goes to the $k$ most probable, with gates $g_e = p_e$"
            + (" renormalised over the chosen $k$" if renorm else "") + ":\n"
            "\\begin{equation*}\n  y = \\sum_{e \\in \\mathrm{top}_k(p)} g_e\\, \\mathrm{MLP}_e(x).\n"
            "\\end{equation*}\n"
            + ("An expert serves at most $\\lceil c\\, n k / E \\rceil$ of a batch's $n$ tokens (capacity factor "
               "$c$), in token order; a token over capacity skips that expert. "
               if _any(ops, "moe", lambda a: float(a.get("capacity_factor", 0)) > 0) else
               "Every expert serves every token routed to it. ")
            + "Training adds the load-balancing loss "
            "$\\alpha E \\sum_e f_e P_e$, with $f_e$ the fraction of tokens routed to $e$ and $P_e$ its mean "
            "router probability.",
            ("shazeer2017outrageously", "lepikhin2021gshard", "fedus2022switch")))
    if "relu" in ops:
        out.append(Equation("Rectifier", "$\\mathrm{ReLU}(z) = \\max(0, z)$, elementwise.", ("nair2010rectified",),
                            ("relu",)))
    if "maxpool2d" in ops or "global_avgpool" in ops:
        parts = []
        if "maxpool2d" in ops:
            parts.append("max pooling takes the largest value of each window")
        if "global_avgpool" in ops:
            parts.append("global average pooling $\\bar{x}_c = \\frac{1}{HW}\\sum_{i,j} x_{c,i,j}$ reduces each "
                         "channel to one value before the classifier")
        out.append(Equation("Pooling", "; ".join(parts).capitalize() + ".", (), ("maxpool2d", "global_avgpool")))
    if "add" in ops:
        out.append(Equation(
            "Residual connections",
            "Blocks are wrapped in identity shortcuts, $x_{\\ell+1} = x_\\ell + F_\\ell(x_\\ell)$.",
            ("he2016deep",), ("add",)))
    if "linear" in ops:
        out.append(Equation(
            "Linear maps",
            "Every projection is $y = x W^{\\top} + b$ ($b$ where the layer has a bias); it costs "
            "$2\\, d_{\\mathrm{in}} "
            "d_{\\mathrm{out}}$ FLOPs per row, the convention of the FLOP counts in Table~\\ref{tab:blocks}.",
            (), ("linear",)))
    return out


_OBJECTIVES: dict[str, Equation] = {
    "autoregressive": Equation(
        "Autoregressive language modelling",
        "The model is trained to predict each token from the tokens before it:\n"
        "\\begin{equation*}\n  \\mathcal{L}_{\\mathrm{AR}} = "
        "-\\frac{1}{T}\\sum_{t=1}^{T} \\log p_\\theta(x_t \\mid x_{<t}).\n"
        "\\end{equation*}",
        ("bengio2003neural", "radford2019language")),
    "classification": Equation(
        "Classification",
        "Cross-entropy between the predicted class distribution and the label $y$:\n"
        "\\begin{equation*}\n  \\mathcal{L}_{\\mathrm{CE}} = -\\log \\frac{\\exp z_y}{\\sum_{c} \\exp z_c}.\n"
        "\\end{equation*}"),
    "regression": Equation(
        "Regression",
        "Mean squared error: $\\mathcal{L} = \\frac{1}{N}\\sum_i \\lVert \\hat{y}_i - y_i \\rVert_2^2$."),
    "masked_lm": Equation(
        "Masked language modelling",
        "A random subset $\\mathcal{M}$ of tokens is masked and predicted from the rest:\n"
        "\\begin{equation*}\n  \\mathcal{L}_{\\mathrm{MLM}} = -\\sum_{t \\in \\mathcal{M}} \\log p_\\theta(x_t \\mid "
        "x_{\\setminus \\mathcal{M}}).\n\\end{equation*}",
        ("devlin2019bert",)),
    "contrastive": Equation(
        "Contrastive objective",
        "Matching pairs $(u_i, v_i)$ in a batch of $N$ are pulled together and the other pairs pushed apart "
        "(InfoNCE, temperature $\\tau$, cosine similarity $s$):\n"
        "\\begin{equation*}\n  \\mathcal{L}_{\\mathrm{NCE}} = -\\frac{1}{N}\\sum_{i=1}^{N} \\log "
        "\\frac{\\exp(s(u_i, v_i)/\\tau)}{\\sum_{j=1}^{N} \\exp(s(u_i, v_j)/\\tau)}.\n\\end{equation*}",
        ("oord2018representation", "radford2021learning")),
    "diffusion": Equation(
        "Diffusion objective",
        "Noise $\\epsilon$ is added to data $x_0$ at a random step $t$ of a fixed schedule $\\bar\\alpha_t$ and "
        "the network predicts it:\n"
        "\\begin{equation*}\n  \\mathcal{L}_{\\mathrm{simple}} = \\mathbb{E}_{x_0, \\epsilon, t}\\left\\lVert "
        "\\epsilon - \\epsilon_\\theta\\!\\left(\\sqrt{\\bar\\alpha_t}\\,x_0 + "
        "\\sqrt{1 - \\bar\\alpha_t}\\,\\epsilon,\\ "
        "t\\right)\\right\\rVert_2^2.\n\\end{equation*}",
        ("ho2020denoising",)),
    "reconstruction": Equation(
        "Reconstruction",
        "The input is reconstructed from the model's output: $\\mathcal{L} = \\lVert x - \\hat{x} \\rVert_2^2$."),
    "seq2seq": Equation(
        "Sequence to sequence",
        "Target tokens are predicted from the source and the target prefix: "
        "$\\mathcal{L} = -\\sum_t \\log p_\\theta(y_t \\mid y_{<t}, x)$.",
        ("vaswani2017attention",)),
    "forecasting": Equation(
        "Forecasting",
        "The next $H$ values are predicted from a lookback window, with a squared error over the horizon: "
        "$\\mathcal{L} = \\frac{1}{H}\\sum_{h=1}^{H} (\\hat{y}_{t+h} - y_{t+h})^2$."),
    "reinforcement": Equation(
        "Policy gradient",
        "The policy $\\pi_\\theta$ is improved along "
        "$\\nabla_\\theta J = \\mathbb{E}\\left[\\sum_t \\nabla_\\theta \\log \\pi_\\theta(a_t \\mid s_t)\\, "
        "\\hat{A}_t\\right]$, with $\\hat{A}_t$ an estimate of the advantage.",
        ("williams1992simple",)),
    "ranking": Equation(
        "Ranking",
        "A pairwise logistic loss over a preferred item $i$ and another item $j$: "
        "$\\mathcal{L} = \\log\\left(1 + \\exp(s_j - s_i)\\right)$."),
    "segmentation": Equation(
        "Segmentation",
        "Per-pixel cross-entropy: $\\mathcal{L} = -\\frac{1}{HW}\\sum_{i,j} \\log p_\\theta(y_{ij} \\mid x)$."),
    "detection": Equation(
        "Detection",
        "A classification loss over predicted boxes plus a box regression loss, "
        "$\\mathcal{L} = \\mathcal{L}_{\\mathrm{cls}} + \\lambda\\, \\mathcal{L}_{\\mathrm{box}}$."),
}


# The reinforcement objective of each RL task: the loss its generated code computes.
_REINFORCEMENT_BY_TASK: dict[str, Equation] = {
    "value_based": Equation(
        "Temporal-difference learning",
        "The action values $Q_\\theta$ are regressed with the Huber loss $\\ell_\\delta$ ($\\delta = 1$) onto the "
        "Double DQN target, the target network $Q_{\\bar\\theta}$ valuing the action the online network picks:\n"
        "\\begin{equation*}\n  \\mathcal{L} = \\ell_\\delta\\!\\left(Q_\\theta(s, a) - r - \\gamma (1 - d)\\, "
        "Q_{\\bar\\theta}\\big(s', \\arg\\max_{a'} Q_\\theta(s', a')\\big)\\right).\n\\end{equation*}",
        ("mnih2015human", "vanhasselt2016deep")),
    "actor_critic": Equation(
        "Clipped surrogate objective",
        "With the probability ratio $\\rho = \\pi_\\theta(a \\mid s) / \\pi_{\\mathrm{old}}(a \\mid s)$, "
        "normalised advantages $\\hat{A}$, the state value $V_\\theta$ and return $R$:\n"
        "\\begin{equation*}\n  \\mathcal{L} = -\\min\\big(\\rho \\hat{A},\\ "
        "\\mathrm{clip}(\\rho, 1 - \\epsilon, 1 + \\epsilon)\\, \\hat{A}\\big) + c_v (V_\\theta(s) - R)^2 "
        "- c_e\\, \\mathcal{H}[\\pi_\\theta(\\cdot \\mid s)].\n\\end{equation*}",
        ("schulman2017proximal",)),
    "model_based": Equation(
        "World model",
        "From a state $s$ and action $a$ the model predicts the next state $\\hat{s}'$, the reward $\\hat{r}$ and "
        "the logit $\\hat{d}$ of the episode ending ($n$ state variables, $\\sigma$ the logistic function): "
        "$\\mathcal{L} = \\lVert \\hat{s}' - s' \\rVert_2^2 / n + (\\hat{r} - r)^2 + "
        "\\mathrm{BCE}(\\sigma(\\hat{d}), d)$.",
        ("sutton1990integrated",)),
    "policy_gradient": Equation(
        "Policy gradient",
        "The policy $\\pi_\\theta$ is improved along the REINFORCE gradient, the batch's mean return as baseline "
        "(returns $R$ normalised to $\\hat{R}$) and an entropy bonus: "
        "$\\mathcal{L} = -\\log \\pi_\\theta(a \\mid s)\\, \\hat{R} - c_e\\, "
        "\\mathcal{H}[\\pi_\\theta(\\cdot \\mid s)]$.",
        ("williams1992simple",)),
}

OBJECTIVE_NAMES = frozenset(_OBJECTIVES)


def objective_equations(objectives: list[str], task: str) -> list[Equation]:
    """One equation per objective the spec names (the task's own loss when it names none); the reinforcement
    objective as the RL task's own loss."""
    names = list(objectives) or ([task] if task in _OBJECTIVES else [])
    seen: list[Equation] = []
    for name in names:
        eq = _REINFORCEMENT_BY_TASK.get(task) if name == "reinforcement" else None
        eq = eq or _OBJECTIVES.get(name)
        if eq is not None and eq not in seen:
            seen.append(eq)
    return seen


# Operations that only move or reshape data (or do nothing at inference): named, never described at length.
PLUMBING = frozenset({"split", "flatten", "transpose", "select", "identity", "dropout"})


def other_operations(ops: Ops, covered: set[str]) -> str:
    """A paragraph naming the operations of the graph that no equation above describes, each with its
    description from the compiler's primitive registry and no equation; "" when there are none.

    This is what a primitive, block or family the paper has no text for gets: an honest, generic line,
    never an invented formula."""
    rest = [op for op in ops if op not in covered and op != "input"]
    described = [op for op in rest if op not in PLUMBING]
    plumbing = [op for op in rest if op in PLUMBING]
    if not rest:
        return ""
    parts = []
    if described:
        items = []
        for op in described:
            prim = PRIMITIVES.get(op)
            doc = prim.doc.strip() if prim is not None and prim.doc.strip() else ""
            items.append(f"\\item {tt(op)}: " + (rm(doc) if doc else "no description in the compiler's primitive "
                                                                      "registry."))
        parts.append("The graph also applies operations for which this paper gives no equation; each is listed with "
                     "its description from the compiler's primitive registry:\n\\begin{itemize}\n"
                     + "\n".join(items) + "\n\\end{itemize}")
    if plumbing:
        parts.append(("The graph also" if not described else "It also") + " contains operations that only move, "
                     "split or reshape tensors, or are the identity at inference: "
                     + ", ".join(tt(op) for op in plumbing) + ".")
    return "\\paragraph{Other operations.} " + "\n".join(parts)
