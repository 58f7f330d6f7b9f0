"""What the spec language knows by name: modalities, tasks, objectives, constraint kinds.

This is data, kept in one place so the checker, the YAML front end, the docs and the editor
support all read the same lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

__all__ = [
    "CONSTRAINTS",
    "FAMILY_GROUPS",
    "INPUT_MODALITIES",
    "LATENCY_CLASSES",
    "OBJECTIVES",
    "OUTPUT_MODALITIES",
    "TASKS",
    "TASK_FIELDS",
    "TASK_FROM_OBJECTIVE",
    "ConstraintKind",
    "group_fits",
]

_DATA_MODALITIES = (
    "text", "image", "audio", "video", "3d", "multimodal", "time_series", "graph", "tabular", "point_cloud",
)
INPUT_MODALITIES = _DATA_MODALITIES + ("user", "item")  # a recommender's ids: inputs only
OUTPUT_MODALITIES = _DATA_MODALITIES + (
    "label", "bounding_boxes", "segmentation_mask", "embedding", "action", "regression",
)

TASKS = (
    "generation", "classification", "regression", "embedding", "ranking", "object_detection",
    "instance_segmentation", "semantic_segmentation", "panoptic_segmentation", "sequence_labeling",
    "time_series_forecast", "anomaly_detection", "speech_recognition", "policy_gradient", "value_based",
    "actor_critic", "model_based", "node_classification", "link_prediction", "graph_classification",
    "recommendation", "multimodal_classification", "multimodal_generation", "multimodal_retrieval",
    "multimodal_question_answering",
    "question_answering", "retrieval_generation", "document_qa", "denoising", "shape_generation",
)

OBJECTIVES = (
    "autoregressive", "masked_lm", "classification", "regression", "contrastive", "diffusion",
    "reconstruction", "seq2seq", "reinforcement", "detection", "segmentation", "forecasting", "ranking",
)

# Latency classes, as the seeds name them, with the bound each stands for (seconds per forward pass).
# `batch` (the earlier YAML tool's class for throughput-bound jobs) bounds no single forward pass, as `offline`.
LATENCY_CLASSES = {"real_time": 0.033, "near_real_time": 0.2, "interactive": 1.0, "batch": float("inf"),
                   "offline": float("inf")}


@dataclass(frozen=True)
class ConstraintKind:
    name: str
    dimension: str  # count | bytes | time | rate | pixels | frequency | int | device
    ops: tuple[str, ...]
    binds: str | None  # family parameter this constraint sets, if any
    doc: str
    needs_device: bool = False


_ALL = ("<=", "<", ">=", ">", "=")
CONSTRAINTS: dict[str, ConstraintKind] = {
    c.name: c
    for c in (
        ConstraintKind("params", "count", _ALL, None, "parameter budget (exact count after compiling)"),
        ConstraintKind("memory", "bytes", ("<=", "<"), None, "memory to run inference (weights + activations), estimated"),
        ConstraintKind("training_memory", "bytes", ("<=", "<"), None,
                       "memory to train with AdamW (weights, grads, optimizer state, activations), estimated"),
        ConstraintKind("latency", "time", ("<=", "<", "="), None, "forward latency at batch 1, estimated",
                       needs_device=True),
        ConstraintKind("throughput", "rate", (">=", ">"), None, "forward passes per second at batch 1, estimated",
                       needs_device=True),
        ConstraintKind("flops", "count", ("<=", "<"), None, "forward FLOPs at the nominal input"),
        ConstraintKind("context", "count", ("=", "<=", ">="), "context", "sequence length in tokens"),
        ConstraintKind("image_size", "pixels", ("=",), "image_size", "input image side in pixels"),
        ConstraintKind("patch_size", "pixels", ("=",), "patch_size", "patch side in pixels"),
        ConstraintKind("channels", "int", ("=",), "channels", "input image channels"),
        ConstraintKind("sample_rate", "frequency", ("=",), "sample_rate", "audio sample rate"),
        ConstraintKind("frames", "int", ("=",), "frames", "video frames per clip"),
        ConstraintKind("batch_size", "int", ("=",), None, "batch size used for estimates"),
        ConstraintKind("device", "device", ("=",), None, "device class the latency constraints refer to"),
    )
}

TASK_FIELDS = {
    "num_classes": "int", "num_labels": "int", "horizon": "int", "lookback": "int", "action_space": "enum",
    "num_actions": "int", "domain": "str", "algorithm": "str", "num_queries": "int", "vocab": "int",
    "num_items": "int", "num_users": "int", "embedding_dim": "int", "output_dim": "int",
    # the YAML schema's num_outputs, action_dim, node_features and mask_resolution: the family parameters they set
    "outputs": "int", "action_dim": "int", "features": "int", "mask_size": "int",
}

_FUSED = ("image", "text", "audio", "video")  # the inputs std.hybrid's fusion families have a front end for

# A seeds-style family name (`transformer`, `cnn`) picks a stdlib family by the input modality.
# (group, input modality) -> (stdlib module, family qualname). `None` modality = any.
FAMILY_GROUPS: dict[str, tuple[tuple[str | None, str], ...]] = {
    # keys: an input modality, `a+b` for several, `@name` where an objective, the task or an output decides (check.py `_fits`)
    "transformer": (("image+text@contrastive", "multimodal.clip"), ("image+text", "vlm.vlm"),
                    ("image@instance_segmentation", "segmentation.maskformer"),
                    ("image@panoptic_segmentation", "segmentation.maskformer"),
                    ("image@object_detection", "detection.detr"), ("image", "vision.vit"),
                    ("video", "video.divided"),
                    ("audio@generation", "audiolm.musicgen"), ("audio", "seq2seq.whisper"),
                    ("text@shape_generation", "threed.text_to_points"), ("text@3d", "threed.text_to_points"),
                    ("text@embedding", "transformer.encoder"), ("text@question_answering", "transformer.encoder"),
                    ("text@sequence_labeling", "transformer.encoder"),
                    ("text", "transformer.decoder"), ("time_series", "forecast.tft"),
                    # GraphGPS over a batch of graphs, its attention masked per graph
                    ("graph@graph_classification", "graphtransformer.gps_graph"), ("graph", "graphtransformer.gps"),
                    ("point_cloud", "pointtransformer.pct"), ("tabular", "tabtransformer.ft_transformer"),
                    (None, "transformer.decoder")),
    "clip": (("image+text", "multimodal.clip"),),
    "vlm": (("image+text", "vlm.vlm"),),
    "video": (("video", "video.divided"),),
    "timesformer": (("video", "video.divided"),),
    "vit": (("image", "vision.vit"),),
    # the first that fits the input and the task (`variant: yolo`, `impala` pick one of them too)
    "cnn": (("image@policy_gradient", "rl.impala_cnn"), ("image@actor_critic", "rl.impala_cnn"),
            ("image@value_based", "rl.nature_cnn"),
            ("image@instance_segmentation", "segmentation.maskformer"),  # the seeds: instance masks from a CNN
            ("image@panoptic_segmentation", "segmentation.maskformer"),
            ("image@object_detection", "detection.yolo"),
            ("image@anomaly_detection", "autoencoder.conv_autoencoder"),
            ("image", "vision.resnet"),
            ("video", "videocnn.resnet3d")),  # R(2+1)D; `variant: r3d_18` the full 3-D convolutions
    "impala": (("image", "rl.impala_cnn"),),
    "resnet": (("image", "vision.resnet"),),
    "convnext": (("image", "vision.convnext"),),
    # a convolutional front end feeding a transformer, for each input; several inputs: one joint encoder (std.hybrid
    # fusion, fusion3), but contrastive image-text (CLIP) and image-text to text (the VLM), with a warning (yaml_schema)
    "hybrid": (*((f"{a}+{b}+{c}", "hybrid.fusion3") for a, b, c in combinations(_FUSED, 3)),
               ("image+text@contrastive", "multimodal.clip"), ("image+text@text", "vlm.vlm"),
               *((f"{a}+{b}", "hybrid.fusion") for a, b in combinations(_FUSED, 2)),
               ("image", "vision.hybrid"), ("audio@text", "seq2seq.whisper"), ("audio", "hybrid.audio"),
               ("text", "hybrid.conv_decoder"), ("time_series", "forecast.tft")),
    "conv_decoder": (("text", "hybrid.conv_decoder"),),
    "mlp": (("tabular@policy_gradient", "rl.mlp_agent"), ("tabular@value_based", "rl.mlp_agent"),
            ("tabular@actor_critic", "rl.mlp_agent"), ("tabular@model_based", "rl.world_model"),
            ("tabular@anomaly_detection", "autoencoder.autoencoder"), ("tabular@embedding", "autoencoder.autoencoder"),
            ("tabular", "tabular.mlp")),
    "gaussian_agent": (("tabular", "rl.gaussian_agent"),),  # continuous actions (the YAML front end's `mlp`)
    "rnn": (("text", "rnn.rnn"), ("time_series", "rnn.rnn")),
    "lstm": (("text", "rnn.rnn"), ("time_series", "rnn.rnn")),
    "gru": (("text", "rnn.rnn"), ("time_series", "rnn.rnn")),
    "seq2seq": (("audio", "seq2seq.whisper"), ("text", "seq2seq.t5")),
    "encoder_decoder": (("audio", "seq2seq.whisper"), ("text", "seq2seq.t5")),
    "bert": (("text", "transformer.encoder"),),
    "pointnet": (("point_cloud", "pointcloud.pointnet"),),
    "autoencoder": (("image", "autoencoder.conv_autoencoder"), ("tabular", "autoencoder.autoencoder"),
                    (None, "autoencoder.autoencoder")),
    "vae": (("image", "autoencoder.conv_vae"), ("tabular", "autoencoder.vae"), (None, "autoencoder.vae")),
    "gpt": (("text", "transformer.decoder"),),
    "decoder": (("text", "transformer.decoder"),),
    "ssm": (("text", "ssm.mamba"),),
    "mamba": (("text", "ssm.mamba"),),
    "s4d": (("text", "ssm.s4d"),),
    "moe": (("text", "moe.decoder"),),
    "mixtral": (("text", "moe.decoder"),),
    "gnn": (("graph@graph_classification", "graph.gcn_graph"), ("graph", "graph.gcn"),
            ("graph@graph_classification", "graph.gat_graph"), ("graph", "graph.gat")),
    "gcn": (("graph@graph_classification", "graph.gcn_graph"), ("graph", "graph.gcn")),
    "gat": (("graph@graph_classification", "graph.gat_graph"), ("graph", "graph.gat")),
    "diffusion": (("image", "diffusion.unet"), ("text@video", "videodiffusion.latte"), ("text", "diffusion.unet")),
    "latte": (("text@video", "videodiffusion.latte"),),
    "unet": (("image", "diffusion.unet"),),
    "yolo": (("image", "detection.yolo"),),
    "yolo_v8": (("image", "detection.yolo"),),  # the seeds' variant name: the anchor-free YOLO family
    "detr": (("image", "detection.detr"),),
    "dqn": (("image", "rl.nature_cnn"), ("tabular", "rl.mlp_agent")),
    "world_model": (("tabular", "rl.world_model"),),
    "two_tower": (("user", "recsys.two_tower"),),
    "musicgen": (("audio", "audiolm.musicgen"),),
    "rag": (("text", "rag.fid_rag"),),
    "fid": (("text", "rag.fid_rag"),),
    "temporal_fusion": (("time_series", "forecast.tft"),),  # the seeds' variant name
    "tft": (("time_series", "forecast.tft"),),
    "maskformer": (("image", "segmentation.maskformer"),),  # not Mask2Former (masked attention, multi-scale)
    "r2plus1d": (("video", "videocnn.resnet3d"),),  # the seeds' variant names of the 3-D ResNets
    "resnet3d": (("video", "videocnn.resnet3d"),),
    "gps": (("graph", "graphtransformer.gps"),),
    "graph_transformer": (("graph", "graphtransformer.gps"),),
    "pct": (("point_cloud", "pointtransformer.pct"),),
    "point_transformer": (("point_cloud", "pointtransformer.pct"),),
    "ft_transformer": (("tabular", "tabtransformer.ft_transformer"),),
}


# objective -> task, for specs that name no task (as the seeds' YAML examples do)
TASK_FROM_OBJECTIVE = {"autoregressive": "generation", "classification": "classification", "regression": "regression",
                        "masked_lm": "generation", "contrastive": "embedding", "diffusion": "denoising",
                        "forecasting": "time_series_forecast", "detection": "object_detection"}


def group_fits(mod: str | None, inputs: list[str], objectives: list[str]) -> bool:
    """A FAMILY_GROUPS key: None (any input), `image`, `image+text` (all of these inputs), with
    `@name` when an objective, the task or an output modality decides (`image+text@contrastive`,
    `graph@graph_classification`, `text@video`)."""
    if mod is None:
        return True
    need, _, objective = mod.partition("@")
    return all(m in inputs for m in need.split("+")) and (not objective or objective in objectives)
