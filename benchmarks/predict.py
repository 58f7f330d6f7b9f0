"""Image-classification pipeline speed on CPU: the compiled ResNet-50's predict pipeline (JPEG files to top-5 labels)
against a reference path with the same weights, in one run.

The reference is torchvision's weights-plus-transforms path where torchvision imports beside this torch. Its PyPI
wheel does not import beside the CPU torch 2.13 (README), so the reference is then a plain torch + Pillow path: the
same steps written out (decode with Pillow, Resize(256) with torchvision's size rule, CenterCrop(224) with its
offset rule, ToTensor, Normalize with the ImageNet mean and std) feeding transformers' ResNetForImageClassification,
which holds the same weights. The weights are random (moved off the init, no network; the batch-norm statistics
those of the photos, so that the logits keep a trained network's scale), saved once as a .pth in
torchvision's keys; the compiled folder's predict pipeline reads that file through its weights.py
(layout `torchvision_resnet`), the reference holds the same tensors under transformers' names.

Images: scikit-learn's two bundled photos (china.jpg, flower.jpg: 640 x 427 JPEG) written as N JPEG files, in
both paths decoded from the file every time. Per path: images per second (N / median seconds of one pass over the
files in batches of 8; the two paths run alternately, after one warm-up pass each), whether the top-5 labels
agree per image, the largest difference of the top-5 probabilities, and, on the same input tensors, the largest
difference of the two models' logits (with the largest logit, for scale).
Prints a table and writes benchmarks/results/predict.json.
Usage: python benchmarks/predict.py [--quick]   (--quick: a narrow ResNet, 8 images, one pass; CI smoke)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BATCH = 8
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def hf_to_torchvision(key: str) -> str:
    """transformers' ResNet key -> torchvision's (the mapping tests/test_weights.py uses)."""
    k = key.replace("resnet.embedder.embedder.convolution.", "conv1.").replace(
        "resnet.embedder.embedder.normalization.", "bn1.").replace("classifier.1.", "fc.")
    m = re.fullmatch(r"resnet\.encoder\.stages\.(\d)\.layers\.(\d+)\.(.+)", k)
    if m is None:
        return k
    stage, block, rest = int(m.group(1)), m.group(2), m.group(3)
    rest = re.sub(r"layer\.(\d)\.convolution", lambda n: f"conv{int(n.group(1)) + 1}", rest)
    rest = re.sub(r"layer\.(\d)\.normalization", lambda n: f"bn{int(n.group(1)) + 1}", rest)
    rest = rest.replace("shortcut.convolution", "downsample.0").replace("shortcut.normalization", "downsample.1")
    return f"layer{stage + 1}.{block}.{rest}"


def reference_transform(path: Path) -> Any:
    """torchvision's ImageClassification eval steps, written with Pillow and torch: Resize(256) (the shorter side to
    256, the longer int(256 * long / short)), CenterCrop(224) (offsets round((side - 224) / 2)), ToTensor, Normalize."""
    import torch
    from PIL import Image

    with Image.open(path) as opened:
        im = opened.convert("RGB")
    w, h = im.size
    size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    im = im.resize(size, Image.Resampling.BILINEAR)
    w, h = im.size
    left, top = round((w - 224) / 2.0), round((h - 224) / 2.0)
    im = im.crop((left, top, left + 224, top + 224))
    x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(224, 224, 3).permute(2, 0, 1).float() / 255
    return (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "predict.json"))
    args = ap.parse_args()
    import torch
    import transformers as hf
    from PIL import Image
    from sklearn.datasets import load_sample_images

    sys.path.insert(0, str(ROOT / "tests"))
    from metagen_backends.pytorch.inference import load_pipeline
    from models import timepair, torchvision_or_none  # the sibling benchmark's helpers (this script's folder)
    from training_helpers import model_folder

    q = args.quick
    n_images, warm, iters = (8, 0, 1) if q else (32, 1, 5)
    narrow = ["width=8", "depths=1,1,1,1"] if q else []
    tv = torchvision_or_none()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = model_folder(tmp, "resnet50")
        photos = load_sample_images().images
        files = []
        for i in range(n_images):
            files.append(tmp / f"photo{i:02d}.jpg")
            Image.fromarray(photos[i % len(photos)]).save(files[-1], quality=90)
        cfg = (hf.ResNetConfig(embedding_size=8, hidden_sizes=[32, 64, 128, 256], depths=[1, 1, 1, 1],
                               layer_type="bottleneck", num_labels=1000) if q else
               hf.ResNetConfig(layer_type="bottleneck", num_labels=1000))  # ResNet-50's defaults
        torch.manual_seed(0)
        ref = hf.ResNetForImageClassification(cfg).eval()
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():  # off the init (zero-initialised norms would make every image look alike)
            for k, v in ref.state_dict().items():
                if v.is_floating_point() and "running_var" not in k:
                    v.add_(0.05 * torch.randn(v.shape, generator=g))
        # batch-norm statistics of these photos (a cumulative average in training mode), as training leaves them: with
        # the init's (mean 0, variance 1) the activations of 16 random blocks grow to logits of 1e8
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        ref.train()
        with torch.no_grad():
            ref(pixel_values=torch.stack([reference_transform(f) for f in files[: len(photos)]]))
        ref.eval()
        torch.save({hf_to_torchvision(k): v for k, v in ref.state_dict().items()}, tmp / "resnet50.pth")
        pipe = load_pipeline(folder, weights=tmp / "resnet50.pth", overrides=narrow)
        tv_model, tv_transform = None, None
        if tv is not None and not q:  # torchvision's own weights-plus-transforms path, same weights
            tv_model = tv.models.resnet50(num_classes=1000).eval()
            tv_model.load_state_dict(torch.load(tmp / "resnet50.pth"))
            t = tv.transforms
            tv_transform = t.Compose([t.Resize(256), t.CenterCrop(224), t.ToTensor(), t.Normalize(MEAN, STD)])
        reference_kind = "torchvision" if tv_model is not None else "torch+Pillow with transformers' ResNet"

        def ours() -> list[dict[str, Any]]:
            return pipe([str(f) for f in files], batch_size=BATCH, top=5)

        def theirs() -> list[list[tuple[int, float]]]:
            out = []
            with torch.no_grad():
                for s in range(0, len(files), BATCH):
                    if tv_model is not None:
                        x = torch.stack([tv_transform(Image.open(f).convert("RGB")) for f in files[s : s + BATCH]])
                        logits = tv_model(x)
                    else:
                        x = torch.stack([reference_transform(f) for f in files[s : s + BATCH]])
                        logits = ref(pixel_values=x).logits
                    p, i = logits.softmax(-1).topk(5)
                    out += [list(zip(i[k].tolist(), p[k].tolist())) for k in range(len(x))]
            return out

        a, b = ours(), theirs()
        agree = [[x["id"] for x in r["labels"]] == [i for i, _ in t] for r, t in zip(a, b)]
        diff = max(abs(x["score"] - p) for r, t in zip(a, b) for x, (_, p) in zip(r["labels"], t))
        with torch.no_grad():  # the same tensors into both models: the weights are the same
            x = torch.stack([reference_transform(f) for f in files[:BATCH]])
            mine = pipe.model(x)
            other = tv_model(x) if tv_model is not None else ref(pixel_values=x).logits
        logit_diff, logit_scale = float((mine - other).abs().max()), float(other.abs().max())
        top1 = sum(r["labels"][0]["score"] for r in a) / len(a)
        ta, tb = timepair(ours, theirs, warm, iters)
    row = {"model": "resnet50" if not q else "resnet50 (narrow: width 8, one block per stage)",
           "params": sum(p.numel() for p in pipe.model.parameters()), "images": n_images, "batch": BATCH,
           "ours_images_per_s": round(n_images / ta, 2), "reference_images_per_s": round(n_images / tb, 2),
           "ratio": round(tb / ta, 3), "top5_agree": sum(agree), "max_top5_prob_diff": float(f"{diff:.2e}"),
           "mean_top1_prob": round(top1, 4), "max_abs_logit_diff": float(f"{logit_diff:.2e}"),
           "max_abs_logit": float(f"{logit_scale:.3g}")}
    result = {"reference": reference_kind, "torchvision_imports": tv is not None, "quick": q, "rows": [row],
              "settings": {"warmup": warm, "iters": iters, "threads": torch.get_num_threads()},
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "load_average_1min": round(os.getloadavg()[0], 2), "torch": torch.__version__,
                          "transformers": hf.__version__}}
    print(f"reference: {reference_kind} (torchvision imports: {tv is not None})")
    print("| model | params | images | batch | compiled pipeline img/s | reference img/s | ratio | top-5 agree | "
          "max top-5 prob diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {row['model']} | {row['params'] / 1e6:.1f}M | {n_images} | {BATCH} | {row['ours_images_per_s']} | "
          f"{row['reference_images_per_s']} | {row['ratio']} | {row['top5_agree']}/{n_images} | "
          f"{row['max_top5_prob_diff']} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
