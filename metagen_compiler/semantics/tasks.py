"""What each task is: its loss, its metrics, the name and meaning of the model's output, the output
modalities it fits. Data, read by the heads pass, lowering, the report and the backends (which map
each loss name to code: backends/pytorch/losses.py).

A family supports a task by declaring a `head <task> = ...` slot; this table says what the task asks
of that head's output.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TASK_SPECS", "Task"]


@dataclass(frozen=True)
class Task:
    name: str
    loss: str  # a loss the backends implement (backends/pytorch/losses.py)
    metrics: tuple[str, ...]
    output: str  # name of the model's output tensor
    describes: str  # what the output holds, for diagnostics and docs
    fits: tuple[str, ...]  # output modalities that fit
    outputs: tuple[str, ...] = ()  # a head of several tensors: the name of each (else output_0, output_1, ...)
    # another form of the head, told apart by its number of tensors: (loss, the name of each tensor); a Gaussian
    # policy's (mean, log_std) instead of logits
    variants: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # a loss other than the form's for the families whose head slot is this block (DETR's set matching)
    head_losses: tuple[tuple[str, str], ...] = ()
    # a teacher-forced loss predicts each token from the ones before it: the family's `context` must hold two
    min_context: int = 0

    def form(self, n_outputs: int) -> tuple[str, tuple[str, ...]]:
        """The loss and output names of a head of `n_outputs` tensors."""
        for loss, names in self.variants:
            if len(names) == n_outputs:
                return loss, names
        if len(self.outputs) == n_outputs:
            return self.loss, self.outputs
        return self.loss, (self.output,) if n_outputs == 1 else tuple(f"{self.output}_{i}" for i in range(n_outputs))

    def loss_for(self, head_block: str) -> str:
        return dict(self.head_losses).get(head_block, self.loss)


TASK_SPECS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("generation", "next_token_cross_entropy", ("perplexity", "token_accuracy"), "logits",
             "next-token logits (B, T, vocab); a codec language model's: one set per codebook (B, K, T, codebook_size)",
             ("text", "audio"), head_losses=(("codebook_lm_heads", "codebook_cross_entropy"),), min_context=2),
        Task("classification", "cross_entropy", ("accuracy", "top5_accuracy"), "logits",
             "class logits (B, num_classes)", ("label",)),
        Task("regression", "mse", ("mae", "rmse"), "prediction", "predicted values (B, outputs)",
             ("regression", "label")),
        Task("sequence_labeling", "token_cross_entropy", ("token_accuracy", "macro_f1"), "logits",
             "per-token label logits (B, T, num_classes)", ("label", "text")),
        Task("question_answering", "span_cross_entropy", ("exact_match", "span_f1"), "logits",
             "start and end logits of the answer span per token (B, T, 2)", ("text", "label")),
        Task("shape_generation", "chamfer", ("chamfer_distance", "f_score"), "points",
             "a point cloud (B, points, 3): the (x, y, z) of each generated point", ("3d", "point_cloud")),
        Task("document_qa", "span_cross_entropy", ("exact_match", "span_f1"), "logits",
             "start and end logits of the answer span per token of the page (B, T, 2)", ("text", "label")),
        Task("embedding", "in_batch_contrastive", ("recall_at_1", "mean_reciprocal_rank"), "embedding",
             "one embedding per input (B, d)", ("embedding",)),
        Task("time_series_forecast", "forecast_mse", ("mae", "rmse", "mape"), "forecast",
             "future values (B, horizon, features)", ("time_series", "regression")),
        Task("anomaly_detection", "reconstruction_mse", ("roc_auc", "average_precision"), "reconstruction",
             "the reconstructed input; the anomaly score is the per-sample reconstruction error",
             ("label", "regression", "tabular", "time_series", "image")),
        Task("semantic_segmentation", "pixel_cross_entropy", ("pixel_accuracy", "mean_iou"), "logits",
             "per-pixel class logits (B, num_classes, H, W)", ("segmentation_mask",)),
        Task("speech_recognition", "transcription_cross_entropy", ("token_accuracy", "token_error_rate"), "logits",
             "next-token logits of the transcript (B, T, vocab)", ("text",), min_context=2),
        Task("multimodal_retrieval", "symmetric_contrastive", ("recall_at_1_a_to_b", "recall_at_1_b_to_a"), "logits",
             "similarity logits of every first input with every second (B, B)", ("embedding", "label")),
        Task("node_classification", "node_cross_entropy", ("accuracy", "macro_f1"), "logits",
             "class logits per node (N, num_classes)", ("label",)),
        Task("link_prediction", "link_bce", ("roc_auc", "accuracy"), "embedding",
             "node embeddings (N, embedding_dim); a candidate edge (i, j) scores z_i . z_j", ("embedding", "label")),
        Task("multimodal_classification", "cross_entropy", ("accuracy", "top5_accuracy"), "logits",
             "class logits from all the inputs together (B, num_classes)", ("label",)),
        Task("graph_classification", "graph_cross_entropy", ("accuracy", "top5_accuracy"), "logits",
             "class logits per graph (graphs, num_classes)", ("label",)),
        Task("policy_gradient", "reinforce", ("entropy", "mean_return"), "logits",
             "action logits of the policy (B, num_actions), or a Gaussian's mean and log std (B, action_dim) each",
             ("action",), variants=(("reinforce_gaussian", ("mean", "log_std")),)),
        Task("value_based", "dqn_td", ("mean_q", "td_error"), "q_values",
             "one Q-value per action (B, num_actions)", ("action",)),
        Task("actor_critic", "ppo_clip", ("entropy", "approx_kl", "clip_fraction", "explained_variance"), "logits",
             "action logits of the policy (B, num_actions) and the state value (B, 1)", ("action",),
             outputs=("logits", "value"), variants=(("ppo_clip_gaussian", ("mean", "log_std", "value")),)),
        Task("model_based", "world_model", ("next_observation_mse", "reward_mse", "done_accuracy"), "prediction",
             "the predicted next observation (B, features), reward (B, 1) and episode-end logit (B, 1)",
             ("tabular", "regression", "action"), outputs=("next_observation", "reward", "done_logit")),
        Task("recommendation", "in_batch_softmax", ("recall_at_10", "ndcg_at_10"), "embedding",
             "a unit-length embedding per user (B, output_dim) and per item (B, output_dim); a pair scores u . v",
             ("embedding", "label"), outputs=("user_embedding", "item_embedding")),
        Task("ranking", "pairwise_logistic", ("ndcg_at_10", "pairwise_accuracy"), "score",
             "one relevance score per (query, candidate) pair (B,)", ("label", "regression", "embedding")),
        Task("denoising", "diffusion_mse", ("noise_mse", "x0_mse"), "noise",
             "the noise predicted in the noisy input x_t at timestep t (B, C, H, W); sampling runs the reverse process",
             ("image", "video")),
        Task("object_detection", "dense_detection", ("map_50", "recall_50"), "logits",
             "per-candidate class logits (B, candidates, classes) and boxes (B, candidates, 4)",
             ("bounding_boxes",), outputs=("logits", "boxes"), head_losses=(("detr_head", "set_detection"),)),
        Task("retrieval_generation", "retrieval_augmented_cross_entropy",
             ("perplexity", "token_accuracy", "retrieval_recall_at_1"), "logits",
             "next-token logits of the answer (B, T, vocab) and the retrieval score of each candidate passage "
             "(B, num_passages)", ("text",), outputs=("logits", "retrieval_scores"), min_context=2),
        Task("instance_segmentation", "mask_set_instance", ("mask_map_50", "mean_matched_iou"), "logits",
             "per-query class logits (B, queries, classes + 1; the last: no object) and mask logits "
             "(B, queries, H', W')", ("segmentation_mask",), outputs=("logits", "masks")),
        Task("panoptic_segmentation", "mask_set_panoptic", ("pq", "sq", "rq"), "logits",
             "per-query class logits (B, queries, classes + 1; the last: no object) and mask logits "
             "(B, queries, H', W')", ("segmentation_mask",), outputs=("logits", "masks")),
        Task("multimodal_generation", "next_token_cross_entropy", ("perplexity", "token_accuracy"), "logits",
             "next-token logits of the text, conditioned on the other inputs (B, T, vocab)", ("text",), min_context=2),
        Task("multimodal_question_answering", "vqa_soft_bce", ("vqa_score", "exact_match"), "logits",
             "answer logits over a fixed answer vocabulary of num_classes answers, from the image and the question "
             "(B, num_classes)", ("label", "text")),
    )
}
