"""Language-model tasks: next-token cross-entropy (decoders, encoder-decoders, transcription), the codec
language model's per-codebook loss, retrieval-augmented generation.

The task code of backends/pytorch/runtime/objectives (see its __init__): each class's loss, metrics, targets and
other methods are pasted into model.py with the spec's input names filled in (backends/pytorch/losses.py).
"""

import torch
import torch.nn.functional as F

from ..codec import codebook_nll, delay_pattern
from .slots import TaskModel, shifted_inputs


class NextTokenCrossEntropy(TaskModel):
    """`next_token_cross_entropy`: a language model's next token; perplexity and token accuracy."""

    def loss(self, batch):
        tokens = batch["y"]
        logits = self(*shifted_inputs(batch, tokens))  # (B, T-1, vocab)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))

    @torch.no_grad()
    def metrics(self, batch):
        tokens = batch["y"]
        logits = self(*shifted_inputs(batch, tokens))
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))
        return {"perplexity": nll.exp(), "token_accuracy": (logits.argmax(-1) == tokens[:, 1:]).float().mean()}


class TranscriptionCrossEntropy(TaskModel):
    """`transcription_cross_entropy`: the transcript's next token; token accuracy, error rate."""

    def loss(self, batch):
        tokens = batch["y"]
        logits = self(*shifted_inputs(batch, tokens))  # (B, T-1, vocab)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))

    @torch.no_grad()
    def metrics(self, batch):
        tokens = batch["y"]
        pred, ref = self(*shifted_inputs(batch, tokens)).argmax(-1), tokens[:, 1:]
        # token error rate: edit distance of the teacher-forced greedy tokens to the reference, per reference token
        n = ref.size(1)
        dist = torch.arange(n + 1, device=ref.device).repeat(ref.size(0), 1)  # (B, n + 1)
        for i in range(pred.size(1)):
            prev, dist = dist, torch.full_like(dist, i + 1)
            for j in range(1, n + 1):
                sub = prev[:, j - 1] + (pred[:, i] != ref[:, j - 1]).long()
                dist[:, j] = torch.minimum(torch.minimum(prev[:, j], dist[:, j - 1]) + 1, sub)
        return {"token_accuracy": (pred == ref).float().mean(), "token_error_rate": (dist[:, n].float() / n).mean()}


class CodebookCrossEntropy(TaskModel):
    """`codebook_cross_entropy`: a codec language model over delayed codebooks (MusicGen)."""

    def loss(self, batch):
        seq = delay_pattern(batch["x"], self.config.codebook_size)  # (B, K, T + K)
        logits = self(seq[:, :, :-1])  # (B, K, T + K - 1, codebook_size)
        return codebook_nll(logits, seq[:, :, 1:], self.config.codebook_size)[0]

    @torch.no_grad()
    def metrics(self, batch):
        seq = delay_pattern(batch["x"], self.config.codebook_size)
        nll, accuracy = codebook_nll(self(seq[:, :, :-1]), seq[:, :, 1:], self.config.codebook_size)
        return {"perplexity": nll.exp(), "token_accuracy": accuracy}


class RetrievalAugmentedCrossEntropy(TaskModel):
    """`retrieval_augmented_cross_entropy`: the answer's next token and the gold passage."""

    def loss(self, batch):
        tokens, positive = batch["y"], batch["positive"]
        logits, scores = self(*shifted_inputs(batch, tokens))  # (B, T-1, vocab), (B, num_passages)
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))
        return nll + self.config.retrieval_weight * F.cross_entropy(scores, positive)

    @torch.no_grad()
    def metrics(self, batch):
        tokens, positive = batch["y"], batch["positive"]
        logits, scores = self(*shifted_inputs(batch, tokens))  # (B, T-1, vocab), (B, num_passages)
        nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1))
        return {"perplexity": nll.exp(), "token_accuracy": (logits.argmax(-1) == tokens[:, 1:]).float().mean(),
                "retrieval_recall_at_1": (scores.argmax(-1) == positive).float().mean()}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        batch["positive"] = torch.randint(0, model.config.num_passages, (batch_size,), generator=g)
