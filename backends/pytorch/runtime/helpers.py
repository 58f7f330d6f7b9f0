"""The helper functions and modules of model.py, as real Python: each top-level definition is pasted, as it is
here, into the model.py that needs it, with the definitions it reads (backends/pytorch/lowering.py's runtime_source
reads this file's text, in this order, each definition up to the next one, so a comment between two goes with the
first; compiling never imports this module, so never imports torch). `init_weights` is every model.py's, with the
convolutions and learned helpers it has; `runtime_module` closes the model.py of a decoder LM, whose generate()
loads generation.py with it.

The cache that `attention`, `biased_attention` and `apply_rope` take is generation.py's LayerCache (or SourceKeys for
attention over an encoder-decoder's source), given by generate().
"""

# S4D unpacks B, T, H as its shape comments read them
# ruff: noqa: RUF059
import math

import torch
import torch.nn as nn  # noqa: PLR0402 (model.py's spelling)
import torch.nn.functional as F


def attention(q, k, v, heads: int, kv_heads: int, causal: bool, cache=None):
    """Scaled dot-product attention on (B, T, C) tensors; splits and merges heads. `cache`: generate()'s
    key-value cache of the layer (generation.py), which adds the past keys and values and gives the mask."""
    B, T, C = q.shape
    S = k.shape[1]
    hs = C // heads
    q = q.view(B, T, heads, hs).transpose(1, 2)  # (B, heads, T, hs)
    k = k.view(B, S, kv_heads, hs).transpose(1, 2)  # (B, kv_heads, S, hs)
    v = v.view(B, S, kv_heads, -1).transpose(1, 2)  # (B, kv_heads, S, hv)
    mask = None
    if cache is not None:  # the keys and values so far (B, kv_heads, S, hs), each head's positions contiguous
        k, v, mask = cache.update(k, v)  # and the (B, 1, T, S) causal and padding mask, or None
        causal = False
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=kv_heads != heads)
    return y.transpose(1, 2).reshape(B, T, -1)  # (B, T, heads * hv)


def biased_attention(q, k, v, bias, heads: int, causal: bool, scaled: bool = True, cache=None):
    """Dot-product attention on (B, T, C) tensors with an additive score bias (1, heads, T, S). `cache`:
    generate()'s cache of the layer (generation.py): past keys and values, and the mask of the keys."""
    B, T, C = q.shape
    S = k.shape[1]
    hs = C // heads
    q = q.view(B, T, heads, hs).transpose(1, 2)  # (B, heads, T, hs)
    k = k.view(B, S, heads, hs).transpose(1, 2)  # (B, heads, S, hs)
    v = v.view(B, S, heads, -1).transpose(1, 2)
    if cache is not None:
        k, v, mask = cache.update(k, v)  # (B, heads, S, hs) so far, (B, 1, T, S) mask of the keys or None
        S = k.shape[2]
        if mask is not None:
            bias = bias.masked_fill(~mask, float("-inf"))
        causal = False
    if causal:
        future = torch.ones(T, S, dtype=torch.bool, device=q.device).triu(S - T + 1)
        bias = bias.masked_fill(future, float("-inf"))
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=None if scaled else 1.0)
    return y.transpose(1, 2).reshape(B, T, -1)  # (B, T, heads * hv)


class RelativePositionBias(nn.Module):
    """T5's relative position bias: a learned scalar per head and bucket of (key position - query position)."""

    def __init__(self, heads: int, buckets: int = 32, max_distance: int = 128, bidirectional: bool = True):
        super().__init__()
        self.buckets, self.max_distance, self.bidirectional = buckets, max_distance, bidirectional
        self.weight = nn.Parameter(torch.zeros(buckets, heads))

    def bucket(self, rel):
        n, out = self.buckets, torch.zeros_like(rel)
        if self.bidirectional:
            n //= 2
            out = (rel > 0).long() * n
            rel = rel.abs()
        else:
            rel = -rel.clamp(max=0)
        exact = n // 2
        far = exact + (torch.log(rel.float() / exact) / math.log(self.max_distance / exact) * (n - exact)).long()
        return out + torch.where(rel < exact, rel, far.clamp(max=n - 1))

    def forward(self, q, k):
        T, S = q.shape[1], k.shape[1]
        rel = torch.arange(S, device=q.device)[None, :] - torch.arange(T, device=q.device)[:, None]  # (T, S)
        return self.weight[self.bucket(rel)].permute(2, 0, 1).unsqueeze(0)  # (1, heads, T, S)


def mel_filters(n_mels: int, n_fft: int, sample_rate: int, device=None):
    """Slaney-scale, Slaney-normalised triangular mel filters (n_mels, n_fft // 2 + 1), as Whisper's (librosa's)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def mel_to_hz(m):
        return torch.where(m >= min_log_mel, min_log_hz * torch.exp(logstep * (m - min_log_mel)), f_sp * m)

    top = sample_rate / 2
    top_mel = math.log(top / min_log_hz) / logstep + min_log_mel if top >= min_log_hz else top / f_sp
    freqs = torch.linspace(0, top, n_fft // 2 + 1, dtype=torch.float64, device=device)
    edges = mel_to_hz(torch.linspace(0, top_mel, n_mels + 2, dtype=torch.float64, device=device))
    ramps = edges[:, None] - freqs[None, :]
    width = edges.diff()
    lower, upper = -ramps[:-2] / width[:-1, None], ramps[2:] / width[1:, None]
    weights = torch.minimum(lower, upper).clamp(min=0) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.float()


def log_mel(x, n_mels: int, n_fft: int, hop: int, sample_rate: int):
    """Whisper's log-mel spectrogram: waveforms (B, samples) -> (B, n_mels, samples // hop)."""
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x, n_fft, hop, window=window, return_complex=True)[..., :-1]  # (B, bins, frames)
    mel = mel_filters(n_mels, n_fft, sample_rate, x.device) @ spec.abs().pow(2)  # (B, n_mels, frames)
    logs = mel.clamp(min=1e-10).log10()
    logs = torch.maximum(logs, logs.amax(dim=(1, 2), keepdim=True) - 8.0)
    return (logs + 4.0) / 4.0


class SinusoidEmbedding(nn.Module):
    """Fixed sinusoidal positions (Whisper's encoder), added to the first T of `length`; a frozen parameter."""

    def __init__(self, length: int, dim: int):
        super().__init__()
        rate = math.log(10000) / (dim // 2 - 1)
        t = torch.arange(length)[:, None] * torch.exp(-rate * torch.arange(dim // 2))[None, :]
        self.weight = nn.Parameter(torch.cat([t.sin(), t.cos()], dim=1), requires_grad=False)

    def forward(self, x):
        return x + self.weight[: x.shape[1]]  # (B, T, dim)


def apply_rope(q, k, heads: int, base: float = 10000.0, scaling: float = 1.0, cache=None):
    """Rotary position embedding (rotate-half layout) on q and k given as (B, T, C); positions / scaling, or
    generate()'s positions of the tokens (B, T) from its key-value cache (generation.py), whose decode state
    keeps the table of one forward pass for every layer."""
    B, T, C = q.shape
    hs = C // heads

    def table():
        inv_freq = 1.0 / (base ** (torch.arange(0, hs, 2, device=q.device, dtype=torch.float32) / hs))
        if scaling != 1.0:
            inv_freq = inv_freq / scaling
        pos = torch.arange(T, device=q.device) if cache is None else cache.state.positions  # (T) or (B, T)
        freqs = pos.to(torch.float32)[..., None] * inv_freq  # (..., T, hs/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (..., T, hs)
        return emb.cos()[..., None, :], emb.sin()[..., None, :]  # (..., T, 1, hs)

    cos, sin = table() if cache is None else cache.state.shared(("rope", hs, base, scaling), table)

    def rotate(x):
        x = x.view(B, T, -1, hs)
        x1, x2 = x.chunk(2, dim=-1)
        out = x * cos.to(x.dtype) + torch.cat((-x2, x1), dim=-1) * sin.to(x.dtype)
        return out.reshape(B, T, -1)

    return rotate(q), rotate(k)


class PositionEmbedding(nn.Module):
    """Learned absolute positions, added to the first T of `length` slots."""

    def __init__(self, length: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, length, dim))

    def forward(self, x):
        return x + self.weight[:, : x.shape[1]]  # (B, T, dim)


class CausalConv1d(nn.Conv1d):
    """Depthwise convolution over time on (B, T, C), padded on the left: output t sees inputs t-kernel+1..t."""

    def __init__(self, channels: int, kernel: int, bias: bool = True):
        super().__init__(channels, channels, kernel, groups=channels, bias=bias)

    def forward(self, x):
        x = F.pad(x.transpose(1, 2), (self.kernel_size[0] - 1, 0))  # (B, C, kernel-1+T)
        return super().forward(x).transpose(1, 2).contiguous()  # (B, T, C), contiguous for the linear maps after it


class SelectiveScan(nn.Module):
    """Mamba's selective scan (S6): a diagonal state space whose step dt and maps B, C depend on the input.

    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t and y_t = C_t h_t + D x_t, with dt = softplus(dt) and
    A = -exp(A_log) (S4D-real init: A[:, n] = -(n + 1)); one step per position, so it is causal."""

    def __init__(self, d_inner: int, d_state: int):
        super().__init__()
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)  # (d_inner, d_state)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(d_inner))

    def forward(self, x, dt, b, c):
        # x, dt: (B, T, d_inner); b, c: (B, T, d_state)
        A = -torch.exp(self.A_log)  # (d_inner, d_state)
        dt = F.softplus(dt)
        dA = torch.exp(dt.unsqueeze(-1) * A)  # (B, T, d_inner, d_state)
        dBx = (dt * x).unsqueeze(-1) * b.unsqueeze(2)  # (B, T, d_inner, d_state)
        h = x.new_zeros(x.shape[0], x.shape[2], A.shape[1])  # (B, d_inner, d_state)
        hs = []
        for dA_t, dBx_t in zip(dA.unbind(1), dBx.unbind(1)):
            h = torch.addcmul(dBx_t, dA_t, h)  # h_t = dA_t * h_{t-1} + dBx_t
            hs.append(h)
        y = (torch.stack(hs, dim=1) * c.unsqueeze(2)).sum(-1)  # (B, T, d_inner)
        return y + x * self.D


class S4D(nn.Module):
    """Diagonal state space, S4D (Gu et al. 2022), on (B, T, H): per channel, d_state / 2 complex modes
    A_n = -exp(log_A_real) + i A_imag with a learned step dt = exp(log_dt), discretised by zero-order hold.
    The convolution kernel K[h, l] = 2 Re(sum_n C_n (exp(dt A_n) - 1) / A_n exp(l dt A_n)) is computed for
    the run-time length T (in real arithmetic: cos and sin for the complex exponentials); then
    y = causal_conv(x, K) + D x, the convolution computed directly (depthwise, kernel as long as T)."""

    def __init__(self, d_model: int, d_state: int = 64, dt_min: float = 0.001, dt_max: float = 0.1):
        super().__init__()
        H, modes = d_model, d_state // 2
        self.log_dt = nn.Parameter(torch.rand(H) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.C = nn.Parameter(torch.randn(H, modes, 2) * 0.5**0.5)  # complex C as (real, imaginary)
        self.log_A_real = nn.Parameter(torch.log(0.5 * torch.ones(H, modes)))  # S4D-Lin init
        self.A_imag = nn.Parameter(math.pi * torch.arange(modes, dtype=torch.float32).repeat(H, 1))
        self.D = nn.Parameter(torch.randn(H))

    def kernel(self, T: int):
        dt = torch.exp(self.log_dt)[:, None]  # (H, 1)
        a_re, a_im = -torch.exp(self.log_A_real), self.A_imag  # (H, modes)
        decay, turn = torch.exp(dt * a_re), dt * a_im  # exp(dt A) = decay * (cos turn + i sin turn)
        e_re, e_im = decay * torch.cos(turn) - 1, decay * torch.sin(turn)  # exp(dt A) - 1
        norm = a_re * a_re + a_im * a_im
        q_re, q_im = (e_re * a_re + e_im * a_im) / norm, (e_im * a_re - e_re * a_im) / norm  # (exp(dt A) - 1) / A
        c_re = self.C[..., 0] * q_re - self.C[..., 1] * q_im
        c_im = self.C[..., 0] * q_im + self.C[..., 1] * q_re
        pos = torch.arange(T, device=dt.device, dtype=dt.dtype)  # (T,)
        mag = torch.exp((dt * a_re).unsqueeze(-1) * pos)  # (H, modes, T)
        phase = turn.unsqueeze(-1) * pos
        waves = c_re.unsqueeze(-1) * torch.cos(phase) - c_im.unsqueeze(-1) * torch.sin(phase)
        return 2 * (mag * waves).sum(1)  # (H, T)

    def forward(self, x):
        B, T, H = x.shape
        k = self.kernel(T).flip(-1).unsqueeze(1)  # (H, 1, T): output t sees inputs 0..t
        y = F.conv1d(F.pad(x.transpose(1, 2), (T - 1, 0)), k, groups=H)  # (B, H, T)
        return x * self.D + y.transpose(1, 2)  # (B, T, H), laid out as x


class MoE(nn.Module):
    """Mixture of SwiGLU experts on (B, T, D).

    A linear router sends each token to its top_k experts. With capacity_factor 0 (Mixtral) every expert
    takes every token sent to it: the (token, expert) pairs are sorted by expert and each expert runs on its
    own rows, so a token's output never depends on the rest of the batch. Otherwise dispatch is capacity-based
    (Switch Transformer, GShard): expert e takes the first `capacity` tokens sent to it, in token order (so a
    token's routing never depends on later tokens), where capacity = ceil(capacity_factor * tokens * top_k /
    experts); a token past an expert's capacity skips that expert (the residual carries it). The outputs are
    summed weighted by the router probabilities, renormalised over the top_k if `normalize` (Mixtral) or not
    (Switch). Each forward records `aux_loss`, the load-balancing loss aux_coef * experts * sum_e (fraction of
    tokens routed to e) * (mean probability of e)."""

    def __init__(self, d_model: int, hidden: int, experts: int, top_k: int = 2, capacity_factor: float = 0.0,
                 normalize: bool = True, aux_coef: float = 0.01):
        super().__init__()
        self.experts, self.top_k, self.capacity_factor = experts, top_k, capacity_factor
        self.normalize, self.aux_coef = normalize, aux_coef
        self.router = nn.Parameter(torch.empty(experts, d_model))
        self.w1 = nn.Parameter(torch.empty(experts, hidden, d_model))  # gate
        self.w2 = nn.Parameter(torch.empty(experts, d_model, hidden))  # down
        self.w3 = nn.Parameter(torch.empty(experts, hidden, d_model))  # up
        for p in self.parameters():
            nn.init.normal_(p, mean=0.0, std=0.02)
        self.aux_loss = None

    def forward(self, x):
        B, T, D = x.shape
        E, k = self.experts, self.top_k
        x = x.reshape(-1, D)  # (N, D), N = B * T tokens
        probs = F.softmax(x @ self.router.t(), dim=-1)  # (N, E)
        gate, expert = probs.topk(k, dim=-1)  # (N, k)
        if self.normalize:
            gate = gate / gate.sum(-1, keepdim=True)
        chosen = (expert.reshape(-1, 1) == torch.arange(E, device=x.device)).long()  # (N * k, E), token order
        if self.capacity_factor > 0:
            y, keep = self._dispatch_by_capacity(x, expert, chosen)
            gate = gate * keep.view(-1, k)
        else:
            y = self._dispatch_all(x, expert)
        y = (y.view(-1, k, D) * gate.unsqueeze(-1)).sum(1)  # (N, D)
        routed = chosen.view(-1, k, E).sum(1).float().mean(0)  # (E,) fraction of tokens routed to each expert
        self.aux_loss = self.aux_coef * E * (routed * probs.mean(0)).sum()
        return y.view(B, T, D)

    def _expert(self, h, e=slice(None)):
        """Expert e's SwiGLU on h (rows, D); by default every expert's, on h (E, rows, D)."""
        return (F.silu(h @ self.w1[e].mT) * (h @ self.w3[e].mT)) @ self.w2[e].mT

    def _dispatch_all(self, x, expert):
        """Every (token, expert) pair computed once: (N * k, D) expert outputs in pair order."""
        flat = expert.reshape(-1)  # (N * k,)
        order = torch.sort(flat, stable=True).indices  # pairs grouped by expert, token order within each
        if flat.is_meta:  # shape and FLOP analysis: no routing to read; every split of the N * k rows costs the same
            counts = [len(r) for r in torch.arange(flat.numel()).tensor_split(self.experts)]
        else:
            counts = torch.bincount(flat, minlength=self.experts).tolist()
        rows = x[order // self.top_k].split(counts)  # the tokens each expert takes
        y = torch.cat([self._expert(h, e) for e, h in enumerate(rows)])
        return y[torch.argsort(order)]

    def _dispatch_by_capacity(self, x, expert, chosen):
        """Capacity buffers: (N * k, D) expert outputs in pair order, zero where skipped, and the kept mask."""
        E, k, D = self.experts, self.top_k, x.shape[1]
        slot = ((chosen.cumsum(0) - 1) * chosen).sum(-1)  # (N * k,) place in its expert's queue
        capacity = math.ceil(self.capacity_factor * x.shape[0] * k / E)
        keep = slot < capacity
        dest = torch.where(keep, expert.reshape(-1) * capacity + slot, E * capacity)  # over capacity: a spare row
        buf = x.new_zeros(E * capacity + 1, D).index_put((dest,), x.repeat_interleave(k, dim=0))
        h = self._expert(buf[:-1].view(E, capacity, D))  # (E, capacity, D)
        return torch.cat((h.reshape(-1, D), h.new_zeros(1, D)))[dest], keep


class ClassToken(nn.Module):
    """A learned token prepended to the sequence: (B, T, D) -> (B, T + 1, D)."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x):
        return torch.cat((self.weight.expand(x.shape[0], -1, -1), x), dim=1)


class TokenTypeEmbedding(nn.Module):
    """Segment (token type) embeddings; every token of a single-segment input has type 0."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num, dim))

    def forward(self, x):
        return x + self.weight[0]  # (B, T, dim)


def quick_gelu(x):
    """x * sigmoid(1.702 x): CLIP's approximation of GELU."""
    return x * torch.sigmoid(1.702 * x)


def eot_pool(x, ids):
    """Each sequence's state at its end-of-text token, the position of its largest id: (B, T, D) -> (B, D)."""
    return x[torch.arange(x.shape[0], device=x.device), ids.argmax(dim=-1)]


class ContrastiveLogits(nn.Module):
    """Scaled cosine similarities exp(logit_scale) a @ b^T of unit vectors, with a learned temperature."""

    def __init__(self, init: float = 2.6592):
        super().__init__()
        self.init = init
        self.logit_scale = nn.Parameter(torch.tensor(init))

    def forward(self, a, b):
        return self.logit_scale.exp() * a @ b.t()  # (B, B')


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of (B, C, H, W) at each position (ConvNeXt's channels-first norm)."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        return super().forward(x).permute(0, 3, 1, 2)  # (B, C, H, W)


class LayerScale(nn.Module):
    """A learned scale per feature of the last dim, starting small so a residual branch starts near zero."""

    def __init__(self, dim: int, init: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), init))

    def forward(self, x):
        return x * self.weight


class LearnedLogStd(nn.Module):
    """A learned log standard deviation per action dim, the same in every state (a Gaussian policy's)."""

    def __init__(self, actions: int, init: float = 0.0):
        super().__init__()
        self.log_std = nn.Parameter(torch.full((actions,), init))

    def forward(self, x):
        return self.log_std.repeat(x.shape[0], 1)  # (B, actions); a copy, not a view of the parameter


def add_identity(x):
    """x + I for a batch of square matrices (B, n, n): a learned transform that starts near the identity."""
    return x + torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)


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


def with_self_loops(edge_index, nodes: int):
    """Sources and targets of a (2, E) edge index with one self loop per node appended: (E + N,) each."""
    loop = torch.arange(nodes, device=edge_index.device, dtype=edge_index.dtype)
    return torch.cat((edge_index[0], loop)), torch.cat((edge_index[1], loop))


def graph_mean_pool(x, batch, graphs: int):
    """Mean of each graph's node states: (N, D) and graph ids (N,) in [0, graphs) -> (graphs, D)."""
    total = x.new_zeros(graphs, x.shape[1]).index_add(0, batch, x)
    count = x.new_zeros(graphs).index_add_(0, batch, x.new_ones(batch.shape[0])).clamp(min=1)
    return total / count[:, None]


def same_graph_bias(batch, heads: int):
    """Attention within each graph of a mini-batch: graph ids (N,) -> an additive bias (1, heads, N, N), 0 where
    both nodes belong to one graph, -inf elsewhere (every node sees itself, so no row is all -inf)."""
    same = batch[:, None] == batch[None, :]  # (N, N)
    bias = torch.zeros(same.shape, device=batch.device).masked_fill(~same, float("-inf"))
    return bias[None, None].expand(1, heads, -1, -1)


class GCNConv(nn.Module):
    """Graph convolution (Kipf and Welling 2017) on node features (N, in) and an edge index (2, E): with a
    self loop per node and deg_i the in-degree of node i, out_i = sum_{j -> i} x_j W^T / sqrt(deg_i deg_j) + b."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x, edge_index):
        N = x.shape[0]
        src, dst = with_self_loops(edge_index, N)  # (E + N,) each
        deg = x.new_zeros(N).index_add_(0, dst, x.new_ones(dst.shape[0]))  # in-degree, at least 1
        inv_sqrt = deg.rsqrt()
        norm = inv_sqrt[src] * inv_sqrt[dst]  # (E + N,)
        h = F.linear(x, self.weight)  # (N, out)
        out = h.new_zeros(h.shape).index_add(0, dst, h[src] * norm[:, None])  # messages summed at each target
        return out if self.bias is None else out + self.bias


class GATConv(nn.Module):
    """Graph attention (Velickovic et al. 2018) on node features (N, in) and an edge index (2, E), self loops
    added: per head, h = x W^T, e_ij = LeakyReLU(a_src . h_j + a_dst . h_i) for each edge j -> i, alpha the
    softmax of e over each node's incoming edges (stabilised by their max), out_i = sum_j alpha_ij h_j; the
    heads concatenated: (N, heads * out)."""

    def __init__(self, in_features: int, out_features: int, heads: int = 1, negative_slope: float = 0.2,
                 bias: bool = True):
        super().__init__()
        self.heads, self.out_features, self.negative_slope = heads, out_features, negative_slope
        self.weight = nn.Parameter(torch.empty(heads * out_features, in_features))
        self.att_src = nn.Parameter(torch.empty(1, heads, out_features))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_features))
        self.bias = nn.Parameter(torch.zeros(heads * out_features)) if bias else None
        for p in (self.weight, self.att_src, self.att_dst):
            nn.init.xavier_uniform_(p)

    def forward(self, x, edge_index):
        N, H, C = x.shape[0], self.heads, self.out_features
        src, dst = with_self_loops(edge_index, N)  # (E + N,) each
        h = F.linear(x, self.weight).view(N, H, C)
        score_src, score_dst = (h * self.att_src).sum(-1), (h * self.att_dst).sum(-1)  # (N, H)
        e = F.leaky_relu(score_src[src] + score_dst[dst], self.negative_slope)  # (E + N, H)
        top = e.new_full((N, H), float("-inf")).scatter_reduce(0, dst[:, None].expand_as(e), e.detach(), "amax")
        p = (e - top[dst]).exp()
        alpha = p / p.new_zeros(N, H).index_add(0, dst, p)[dst]  # softmax over each node's incoming edges
        out = h.new_zeros(N, H, C).index_add(0, dst, h[src] * alpha[..., None]).reshape(N, H * C)
        return out if self.bias is None else out + self.bias


class GATEdgeConv(nn.Module):
    """Graph attention with edge features, as PyTorch Geometric's GATConv(edge_dim=...): node features (N, in),
    an edge index (2, E) and edge features (E, edge_dim). Self loops are added, each with the mean features of
    its node's incoming edges (zeros where none: fill_value='mean'); per head, h = x W^T and for each edge j -> i
    with features f, e_ij = LeakyReLU(a_src . h_j + a_dst . h_i + a_edge . (f W_e^T)); alpha the softmax of e
    over each node's incoming edges, out_i = sum_j alpha_ij h_j; the heads concatenated: (N, heads * out)."""

    def __init__(self, in_features: int, out_features: int, edge_dim: int, heads: int = 1,
                 negative_slope: float = 0.2, bias: bool = True):
        super().__init__()
        self.heads, self.out_features, self.negative_slope = heads, out_features, negative_slope
        self.weight = nn.Parameter(torch.empty(heads * out_features, in_features))
        self.att_src = nn.Parameter(torch.empty(1, heads, out_features))
        self.att_dst = nn.Parameter(torch.empty(1, heads, out_features))
        self.lin_edge = nn.Parameter(torch.empty(heads * out_features, edge_dim))
        self.att_edge = nn.Parameter(torch.empty(1, heads, out_features))
        self.bias = nn.Parameter(torch.zeros(heads * out_features)) if bias else None
        for p in (self.weight, self.att_src, self.att_dst, self.lin_edge, self.att_edge):
            nn.init.xavier_uniform_(p)

    def forward(self, x, edge_index, edge_attr):
        N, H, C = x.shape[0], self.heads, self.out_features
        dst_only = edge_index[1]
        count = x.new_zeros(N).index_add_(0, dst_only, x.new_ones(dst_only.shape[0])).clamp(min=1)
        loop_attr = edge_attr.new_zeros(N, edge_attr.shape[1]).index_add(0, dst_only, edge_attr) / count[:, None]
        attr = torch.cat((edge_attr, loop_attr))  # (E + N, edge_dim)
        src, dst = with_self_loops(edge_index, N)  # (E + N,) each
        h = F.linear(x, self.weight).view(N, H, C)
        score_src, score_dst = (h * self.att_src).sum(-1), (h * self.att_dst).sum(-1)  # (N, H)
        score_edge = (F.linear(attr, self.lin_edge).view(-1, H, C) * self.att_edge).sum(-1)  # (E + N, H)
        e = F.leaky_relu(score_src[src] + score_dst[dst] + score_edge, self.negative_slope)  # (E + N, H)
        top = e.new_full((N, H), float("-inf")).scatter_reduce(0, dst[:, None].expand_as(e), e.detach(), "amax")
        p = (e - top[dst]).exp()
        alpha = p / p.new_zeros(N, H).index_add(0, dst, p)[dst]  # softmax over each node's incoming edges
        out = h.new_zeros(N, H, C).index_add(0, dst, h[src] * alpha[..., None]).reshape(N, H * C)
        return out if self.bias is None else out + self.bias


def timestep_embedding(t, dim: int, flip_sin_to_cos: bool = True, shift: float = 0.0, max_period: float = 10000.0):
    """Sinusoidal embedding of integer timesteps (B,) -> (B, dim), as diffusers' Timesteps."""
    half = dim // 2
    # the frequencies in float64 on the CPU, rounded once (every runtime gets the same float32 table)
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float64) / (half - shift)
    arg = t.float()[:, None] * torch.exp(exponent).float().to(t.device)[None, :]  # (B, half)
    sin, cos = torch.sin(arg), torch.cos(arg)
    return torch.cat((cos, sin) if flip_sin_to_cos else (sin, cos), dim=-1)


def sine_position_2d(x, height: int, width: int, temperature: float = 10000.0):
    """DETR's sine positions (PositionEmbeddingSine, normalised) of a height x width map, for tokens (B, H*W, D)."""
    n = x.shape[-1] // 2  # features per axis: y first, then x
    scale = 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32, device=x.device) / (height + 1e-6) * scale  # (H,)
    xs = torch.arange(1, width + 1, dtype=torch.float32, device=x.device) / (width + 1e-6) * scale  # (W,)
    dim_t = temperature ** (2 * (torch.arange(n, device=x.device) // 2) / n)  # (n,)
    py, px = y[:, None] / dim_t, xs[:, None] / dim_t  # (H, n), (W, n)
    py = torch.stack((py[:, 0::2].sin(), py[:, 1::2].cos()), dim=2).flatten(1)  # sin, cos interleaved
    px = torch.stack((px[:, 0::2].sin(), px[:, 1::2].cos()), dim=2).flatten(1)
    pos = torch.cat((py[:, None, :].expand(height, width, n), px[None, :, :].expand(height, width, n)), dim=2)
    return pos.reshape(1, height * width, 2 * n).to(x.dtype).expand(x.shape[0], -1, -1)  # (B, H*W, D)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine, all buffers (DETR's FrozenBatchNorm2d): x * scale + shift."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x):
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[:, None, None] + shift[:, None, None]


class ObjectQueries(nn.Module):
    """DETR's learned object queries (num, dim), N(0, 1) as nn.Embedding, expanded over the batch."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num, dim))

    def forward(self, x):
        return self.weight[None].expand(x.shape[0], -1, -1)  # (B, num, dim)


class GroupedLayerNorm(nn.Module):
    """One LayerNorm(dim) per group of `dim` consecutive features of (..., groups * dim)."""

    def __init__(self, groups: int, dim: int, eps: float = 1e-5):
        super().__init__()
        self.groups, self.dim, self.eps = groups, dim, eps
        self.weight = nn.Parameter(torch.ones(groups * dim))
        self.bias = nn.Parameter(torch.zeros(groups * dim))

    def forward(self, x):
        y = F.layer_norm(x.unflatten(-1, (self.groups, self.dim)), (self.dim,), eps=self.eps)
        return y.flatten(-2) * self.weight + self.bias


def auxiliary_loss(model: nn.Module):
    """The terms modules add to the loss in their last forward (`aux_loss`: a VAE's KL term, MoE load balancing)."""
    return sum(m.aux_loss for m in model.modules() if getattr(m, "aux_loss", None) is not None)


class CodebookEmbedding(nn.Module):
    """One embedding table per codebook of an audio codec; the codebooks' embeddings are summed (MusicGen)."""

    def __init__(self, codebooks: int, num: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(codebooks, num, dim))

    def forward(self, tokens):  # (B, codebooks, T) ids -> (B, T, dim)
        K, num = self.weight.shape[:2]
        offsets = torch.arange(K, device=tokens.device)[:, None] * num  # codebook k's rows start at k * num
        return F.embedding(tokens + offsets, self.weight.flatten(0, 1)).sum(1)


class CodebookHeads(nn.Module):
    """One bias-free linear map per codebook: (B, T, dim) -> logits (B, codebooks, T, num)."""

    def __init__(self, dim: int, codebooks: int, num: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(codebooks, num, dim))

    def forward(self, x):  # one matmul with the heads side by side: (B, T, dim) @ (dim, codebooks * num)
        K, num = self.weight.shape[:2]
        return (x @ self.weight.flatten(0, 1).t()).unflatten(-1, (K, num)).transpose(1, 2)


def sinusoid_positions(x):
    """Adds MusicGen's fixed positions to (B, T, D): cos then sin of t * exp(-log(10000) i / (D / 2 - 1))."""
    half = x.shape[-1] // 2
    freqs = torch.exp(torch.arange(half, device=x.device).float() * -(math.log(10000) / (half - 1)))
    t = torch.arange(x.shape[1], device=x.device).float()[:, None] * freqs[None, :]  # (T, half)
    return x + torch.cat([t.cos(), t.sin()], dim=1).to(x.dtype)


def top_k_pairs(scores, question, passages, k: int):
    """Fusion-in-Decoder's reader inputs: the k passages of the highest score (B, P), best first, each prefixed
    with the question: question (B, Tq), passages (B, P, Tp) token ids -> (B, k, Tq + Tp)."""
    index = scores.topk(k, dim=-1).indices  # (B, k); an index choice, no gradient
    top = passages.gather(1, index[:, :, None].expand(-1, -1, passages.shape[2]))  # (B, k, Tp)
    return torch.cat((question[:, None, :].expand(-1, k, -1), top), dim=2)


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """Initial weights: N(0, 0.02) for linear maps and embeddings (GPT-2, ViT), Kaiming for
    convolutions (ResNet); norms start at identity; learned tokens and positions at N(0, 0.02)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    elif isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def runtime_module(name: str):
    """A runtime file copied beside this model.py (generation.py), imported by its path once."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().with_name(name + ".py")
    key = f"metagen_runtime:{path}"
    if key not in sys.modules:
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: metagenc writes it beside model.py")
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[key] = module
    return sys.modules[key]
