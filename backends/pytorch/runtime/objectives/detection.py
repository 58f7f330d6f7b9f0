"""Detection and segmentation by sets: the anchor-free detector (FCOS), DETR's set prediction, MaskFormer's
mask classification (instance and panoptic).

The task code of backends/pytorch/runtime/objectives (see its __init__): each class's loss, metrics, targets and
other methods are pasted into model.py with the spec's input names filled in (backends/pytorch/losses.py).
"""

import torch

from ..boxes import box_giou
from ..detection import assign_center_prior, decode_ltrb, detection_anchors, map_50, sigmoid_focal_loss
from ..masks import mask_map_50, mask_set_loss, match_masks, mean_matched_iou, panoptic_quality, segments_from_masks
from ..matching import set_prediction_loss
from .slots import TaskModel, batch_inputs


class DenseDetection(TaskModel):
    """`dense_detection`: the anchor-free detector (FCOS assignment, focal and GIoU losses); mAP@0.5, recall."""

    def loss(self, batch):
        logits, raw = self(*batch_inputs(batch))  # (B, cells, num_classes), (B, cells, 4)
        centres, strides = detection_anchors(self.config.image_size, logits.device)
        target_cls, target_box, positive = assign_center_prior(centres, strides, batch["boxes"], batch["labels"],
                                                               logits.shape[-1])
        n = positive.sum().clamp(min=1)
        loss_cls = sigmoid_focal_loss(logits, target_cls).sum() / n
        loss_box = (1 - box_giou(decode_ltrb(raw, centres, strides)[positive], target_box[positive])).sum() / n
        return loss_cls + 2.0 * loss_box

    @torch.no_grad()
    def metrics(self, batch):
        # mAP at IoU 0.5 over the batch (all-point interpolated AP per class with ground truth, averaged) and the
        # recall of the same detections at IoU 0.5
        # of all detections kept at score 0.001 (NMS at IoU 0.6, at most 100 per image)
        detections = self.detect(batch["x"], score_threshold=0.001, iou_threshold=0.6)
        mean_ap, recall = map_50(detections, batch["boxes"], batch["labels"])
        return {"map_50": mean_ap, "recall_50": recall}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        max_objects, size = 4, model.config.image_size
        count = 1 + torch.arange(batch_size) % max_objects  # objects per image: 1, 2, 3, 4, 1, ...
        wh = (0.15 + 0.45 * torch.rand(batch_size, max_objects, 2, generator=g)) * size
        centre = wh / 2 + torch.rand(batch_size, max_objects, 2, generator=g) * (size - wh)
        pad = torch.arange(max_objects)[None, :] >= count[:, None]
        batch["boxes"] = torch.cat((centre - wh / 2, centre + wh / 2), -1).masked_fill(pad[..., None], 0.0)
        batch["labels"] = torch.randint(0, model.config.num_classes, (batch_size, max_objects), generator=g).masked_fill(pad, -1)


class SetDetection(TaskModel):
    """`set_detection`: DETR's Hungarian-matched set loss; mAP@0.5 and recall."""

    def loss(self, batch):
        logits, boxes = self(*batch_inputs(batch))  # (B, queries, num_classes + 1), (B, queries, 4)
        return set_prediction_loss(logits, boxes, batch["boxes"], batch["labels"], self.config.image_size)

    @torch.no_grad()
    def metrics(self, batch):
        # mAP at IoU 0.5 over the batch (all-point interpolated AP per class with ground truth, averaged) and the
        # recall of the same detections at IoU 0.5
        # of every query's most likely class (no threshold: DETR ranks its queries by score)
        detections = self.detect(batch["x"], score_threshold=0.0)
        mean_ap, recall = map_50(detections, batch["boxes"], batch["labels"])
        return {"map_50": mean_ap, "recall_50": recall}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        max_objects, size = 4, model.config.image_size
        count = 1 + torch.arange(batch_size) % max_objects  # objects per image: 1, 2, 3, 4, 1, ...
        wh = (0.15 + 0.45 * torch.rand(batch_size, max_objects, 2, generator=g)) * size
        centre = wh / 2 + torch.rand(batch_size, max_objects, 2, generator=g) * (size - wh)
        pad = torch.arange(max_objects)[None, :] >= count[:, None]
        batch["boxes"] = torch.cat((centre - wh / 2, centre + wh / 2), -1).masked_fill(pad[..., None], 0.0)
        batch["labels"] = torch.randint(0, model.config.num_classes, (batch_size, max_objects), generator=g).masked_fill(pad, -1)


class MaskSetInstance(TaskModel):
    """`mask_set_instance`: MaskFormer's mask classification loss; mask AP@0.5 and matched IoU."""

    def loss(self, batch):
        logits, masks = self(*batch_inputs(batch))  # (B, queries, num_classes + 1), (B, queries, H/4, W/4)
        return mask_set_loss(logits, masks, batch["masks"], batch["labels"])

    @torch.no_grad()
    def metrics(self, batch):
        # mask AP at IoU 0.5 of the top-100 instances per image, and the mean IoU of the Hungarian-matched masks
        outputs = self(*batch_inputs(batch))
        instances = self.instance_inference(outputs, top_k=100)
        matches = match_masks(*outputs, batch["masks"], batch["labels"])  # type: ignore[call-arg]
        return {"mask_map_50": mask_map_50(instances, batch["masks"], batch["labels"]),
                "mean_matched_iou": mean_matched_iou(matches)}

    @staticmethod
    def targets(model, inputs, batch, batch_size, g, seed, example_inputs):
        max_segments, size = 4, model.config.image_size
        count = 1 + torch.arange(batch_size) % max_segments  # segments per image: 1, 2, 3, 4, 1, ...
        wh = ((0.2 + 0.5 * torch.rand(batch_size, max_segments, 2, generator=g)) * size).long()
        corner = (torch.rand(batch_size, max_segments, 2, generator=g) * (size - wh)).long()
        ids = torch.zeros(batch_size, size, size, dtype=torch.long)
        for b in range(batch_size):
            for m in range(int(count[b])):
                (x, y), (w, h) = corner[b, m].tolist(), wh[b, m].tolist()
                ids[b, y : y + h, x : x + w] = m + 1
        slots = torch.arange(1, max_segments + 1)[None, :, None, None]
        batch["masks"] = (ids[:, None] == slots).float()
        labels = torch.randint(0, model.config.num_classes, (batch_size, max_segments), generator=g)
        batch["labels"] = labels.masked_fill((batch["masks"].sum((2, 3)) == 0) | (slots[0, :, 0, 0] > count[:, None]), -1)


class MaskSetPanoptic(MaskSetInstance):
    """`mask_set_panoptic`: MaskFormer's loss and targets (`mask_set_instance`'s); panoptic quality."""

    @torch.no_grad()
    def metrics(self, batch):
        # panoptic quality of MaskFormer's panoptic inference (thresholds 0.8) against the ground-truth segments
        pred_ids, pred_classes = self.panoptic_inference(self(*batch_inputs(batch)))
        gt_ids, gt_classes = segments_from_masks(batch["masks"], batch["labels"])
        pq, sq, rq = panoptic_quality(pred_ids, pred_classes, gt_ids, gt_classes, self.config.num_classes)
        return {"pq": pq, "sq": sq, "rq": rq}
