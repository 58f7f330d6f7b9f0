"""Primitive -> PyTorch. Weighted primitives become nn.Module constructors; the others become
functional expressions in `forward`. Templates take Python expression strings for the arguments."""

from __future__ import annotations

__all__ = ["MODULES", "MODULE_CALL", "FUNCTIONAL", "HELPERS", "LEARNED_HELPERS", "helper_deps"]

# weighted primitives: constructor text. {name} are argument expressions; `?name` marks an
# argument left out when it equals the primitive's default.
MODULES: dict[str, str] = {
    "linear": "nn.Linear({in_features}, {out_features}?, bias={bias})",
    "conv2d": "nn.Conv2d({in_channels}, {out_channels}, {kernel}?, stride={stride}?, padding={padding}?, groups={groups}?, bias={bias})",
    "batchnorm": "nn.BatchNorm2d({channels}?, eps={eps}?, momentum={momentum})",
    "layernorm": "nn.LayerNorm({dim}?, eps={eps}?, bias={bias})",
    "rmsnorm": "nn.RMSNorm({dim}, eps={eps})",
    "embedding": "nn.Embedding({num}, {dim})",
    "pos_embedding": "PositionEmbedding({length}, {dim})",
    "cls_token": "ClassToken({dim})",
    "type_embedding": "TokenTypeEmbedding({num}, {dim})",
    "contrastive_logits": "ContrastiveLogits({init})",
    "lstm": "nn.LSTM({in_features}, {hidden}?, num_layers={layers}, batch_first=True?, bidirectional={bidirectional})",
    "gru": "nn.GRU({in_features}, {hidden}?, num_layers={layers}, batch_first=True?, bidirectional={bidirectional})",
    "layernorm2d": "LayerNorm2d({channels}?, eps={eps})",
    "conv1d": "nn.Conv1d({in_channels}, {out_channels}, {kernel}?, stride={stride}?, padding={padding}?, groups={groups}"
              "?, bias={bias})",
    "conv_transpose2d": "nn.ConvTranspose2d({in_channels}, {out_channels}, {kernel}?, stride={stride}?, padding="
                        "{padding}?, output_padding={output_padding}?, groups={groups}?, bias={bias})",
    "batchnorm1d": "nn.BatchNorm1d({channels}?, eps={eps}?, momentum={momentum})",
    "reparameterize": "Reparameterize({latent}?, beta={beta}?, elements={elements})",
    "layer_scale": "LayerScale({dim}?, init={init})",
}

# weighted primitives whose module returns more than the output tensor: the expression that takes it
MODULE_CALL: dict[str, str] = {"lstm": "{call}[0]", "gru": "{call}[0]"}

# weightless primitives: an expression over the inputs {x} ({q}, {k}, {v}; {a}, {b}) and arguments.
FUNCTIONAL: dict[str, str] = {
    "relu": "F.relu({x})",
    "quick_gelu": "quick_gelu({x})",
    "l2_normalize": "F.normalize({x}, dim={dim}?, eps={eps})",
    "eot_pool": "eot_pool({a}, {b})",
    "gelu": "F.gelu({x}?, approximate={approximate})",
    "silu": "F.silu({x})",
    "tanh": "torch.tanh({x})",
    "sigmoid": "torch.sigmoid({x})",
    "softmax": "F.softmax({x}, dim={dim})",
    "dropout": "F.dropout({x}, {p}, self.training)",
    "identity": "{x}",
    "maxpool2d": "F.max_pool2d({x}, {kernel}, {stride}, {padding})",
    "avgpool2d": "F.avg_pool2d({x}, {kernel}, {stride}, {padding})",
    "global_avgpool": "{x}.mean(dim=(2, 3))",
    "flatten": "{x}.flatten({start}, {end})",
    "transpose": "{x}.transpose({dim0}, {dim1})",
    "permute": "{x}.permute{dims}",
    "unflatten": "{x}.unflatten({dim}, {sizes})",
    "max": "{x}.amax(dim={dim})",
    "matmul": "{a} @ {b}",
    "add_identity": "add_identity({x})",
    "select": "{x}.select({dim}, {index})",
    "mean": "{x}.mean(dim={dim})",
    "split": "{x}.chunk({parts}, dim={dim})",
    "sdpa": "attention({q}, {k}, {v}, {heads}, {kv_heads}, {causal})",
    "rope": "apply_rope({q}, {k}, {heads}, {base})",
    "add": "{a} + {b}",
    "sub": "{a} - {b}",
    "mul": "{a} * {b}",
}

INPUT_NAMES: dict[str, tuple[str, ...]] = {
    "sdpa": ("q", "k", "v"), "rope": ("q", "k"), "eot_pool": ("a", "b"), "add": ("a", "b"), "sub": ("a", "b"),
    "mul": ("a", "b"), "matmul": ("a", "b"),
}

HELPERS: dict[str, str] = {
    "attention": '''
def attention(q, k, v, heads: int, kv_heads: int, causal: bool):
    """Scaled dot-product attention on (B, T, C) tensors; splits and merges heads."""
    B, T, C = q.shape
    S = k.shape[1]
    hs = C // heads
    q = q.view(B, T, heads, hs).transpose(1, 2)  # (B, heads, T, hs)
    k = k.view(B, S, kv_heads, hs).transpose(1, 2)  # (B, kv_heads, S, hs)
    v = v.view(B, S, kv_heads, -1).transpose(1, 2)  # (B, kv_heads, S, hv)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=kv_heads != heads)
    return y.transpose(1, 2).reshape(B, T, -1)  # (B, T, heads * hv)
''',
    "apply_rope": '''
def apply_rope(q, k, heads: int, base: float = 10000.0):
    """Rotary position embedding (rotate-half layout) on q and k given as (B, T, C)."""
    B, T, C = q.shape
    hs = C // heads
    inv_freq = 1.0 / (base ** (torch.arange(0, hs, 2, device=q.device, dtype=torch.float32) / hs))
    freqs = torch.outer(torch.arange(T, device=q.device, dtype=torch.float32), inv_freq)  # (T, hs/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (T, hs)
    cos, sin = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]

    def rotate(x):
        x = x.view(B, T, -1, hs)
        x1, x2 = x.chunk(2, dim=-1)
        out = x * cos.to(x.dtype) + torch.cat((-x2, x1), dim=-1) * sin.to(x.dtype)
        return out.reshape(B, T, -1)

    return rotate(q), rotate(k)
''',
    "PositionEmbedding": '''
class PositionEmbedding(nn.Module):
    """Learned absolute positions, added to the first T of `length` slots."""

    def __init__(self, length: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, length, dim))

    def forward(self, x):
        return x + self.weight[:, : x.shape[1]]  # (B, T, dim)
''',
    "ClassToken": '''
class ClassToken(nn.Module):
    """A learned token prepended to the sequence: (B, T, D) -> (B, T + 1, D)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x):
        return torch.cat((self.weight.expand(x.shape[0], -1, -1), x), dim=1)
''',
    "TokenTypeEmbedding": '''
class TokenTypeEmbedding(nn.Module):
    """Segment (token type) embeddings; every token of a single-segment input has type 0."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num, dim))

    def forward(self, x):
        return x + self.weight[0]  # (B, T, dim)
''',
    "quick_gelu": '''
def quick_gelu(x):
    """x * sigmoid(1.702 x): CLIP's approximation of GELU."""
    return x * torch.sigmoid(1.702 * x)
''',
    "eot_pool": '''
def eot_pool(x, ids):
    """Each sequence's state at its end-of-text token, the position of its largest id: (B, T, D) -> (B, D)."""
    return x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)]
''',
    "ContrastiveLogits": '''
class ContrastiveLogits(nn.Module):
    """Scaled cosine similarities exp(logit_scale) a @ b^T of unit vectors, with a learned temperature."""

    def __init__(self, init: float = 2.6592):
        super().__init__()
        self.init = init
        self.logit_scale = nn.Parameter(torch.tensor(init))

    def forward(self, a, b):
        return self.logit_scale.exp() * a @ b.t()  # (B, B')
''',
    "LayerNorm2d": '''
class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of (B, C, H, W) at each position (ConvNeXt's channels-first norm)."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        return super().forward(x).permute(0, 3, 1, 2)  # (B, C, H, W)
''',
    "LayerScale": '''
class LayerScale(nn.Module):
    """A learned scale per feature of the last dim, starting small so a residual branch starts near zero."""

    def __init__(self, dim: int, init: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), init))

    def forward(self, x):
        return x * self.weight
''',
    "add_identity": '''
def add_identity(x):
    """x + I for a batch of square matrices (B, n, n): a learned transform that starts near the identity."""
    return x + torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)
''',
    "Reparameterize": '''
class Reparameterize(nn.Module):
    """VAE sampling from (B, 2 * latent) = (mean, log-variance): mean + exp(logvar / 2) * noise in training,
    the mean at inference. Keeps beta * KL(q(z|x) || N(0, I)) / elements as `aux_loss` (Model.loss adds it):
    the KL summed over the latent dims and averaged over the batch, per input element, so it is on the scale
    of a mean squared reconstruction error (beta = 2: the negative ELBO of a unit-variance Gaussian decoder)."""

    def __init__(self, latent: int, beta: float = 1.0, elements: int = 1):
        super().__init__()
        self.latent = latent
        self.beta = beta
        self.elements = elements
        self.aux_loss = None

    def forward(self, x):
        mean, logvar = x.chunk(2, dim=-1)  # (B, latent) each
        kl = -0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum(-1).mean()
        self.aux_loss = self.beta * kl / self.elements
        if not self.training:
            return mean
        return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)  # (B, latent)
''',
    "auxiliary_loss": '''
def auxiliary_loss(model: nn.Module):
    """The terms modules add to the loss in their last forward (`aux_loss`: a VAE's KL divergence)."""
    return sum(m.aux_loss for m in model.modules() if getattr(m, "aux_loss", None) is not None)
''',
}

# helper modules with a learned `weight` that init_weights draws from N(0, 0.02)
LEARNED_HELPERS = ("PositionEmbedding", "ClassToken", "TokenTypeEmbedding")


def helper_deps(prim: str) -> list[str]:
    return {"sdpa": ["attention"], "rope": ["apply_rope"], "pos_embedding": ["PositionEmbedding"],
            "cls_token": ["ClassToken"], "type_embedding": ["TokenTypeEmbedding"],
            "contrastive_logits": ["ContrastiveLogits"], "eot_pool": ["eot_pool"], "quick_gelu": ["quick_gelu"],
            "layernorm2d": ["LayerNorm2d"], "layer_scale": ["LayerScale"],
            "add_identity": ["add_identity"], "reparameterize": ["Reparameterize", "auxiliary_loss"]}.get(prim, [])
