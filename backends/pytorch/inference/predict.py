"""Run this folder's model on raw inputs: prompts, image/audio/CSV/graph files, values. See docs/inference.md.

    python predict.py --weights gpt2/ --tokenizer tokenizer.json "Once upon a time"     # text in, text out
    python predict.py --checkpoint runs/<run>/last cat.png dog.png                      # top-5 labels with scores
    python predict.py --weights detr.safetensors street.jpg --out boxes.json            # boxes, labels, scores
    python predict.py --checkpoint runs/<run>/last --steps 50 --guidance 7.5 -o samples/ "a red square"
    python predict.py --checkpoint runs/<run>/last --init-image x.png --strength 0.6 [--mask m.png] "a red square"
    python predict.py --weights layoutlm/ --tokenizer tokenizer.json page.png "What is the total?"  # OCR (tesseract)
    python predict.py --weights musicgen/ --codec encodec_32khz/ --max-new-tokens 250 -o music/  # WAV files

Prints one result per input (the generated text, or one JSON object per line) and, with --out, writes them:
a .json file of the results, or for masks, generated images and audio a folder of PNG/WAV files and results.json.
Bad input is one line `error: ...` on stderr and exit status 1. Needs torch (and what the inputs need: tokenizers,
Pillow, soundfile); not MetaGen.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING or (__package__ or "").rsplit(".", 1)[-1] == "inference":  # the compiler's package
    from ..training import data
    from . import audio_out, pipelines
else:  # run as a script from the model's folder
    import audio_out  # type: ignore[no-redef]
    import data  # type: ignore[no-redef]
    import pipelines  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
FILE_OUTPUTS = ("mask", "image", "frames", "tensor")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Run this folder's model on raw inputs (see docs/inference.md).")
    add = p.add_argument
    add("inputs", nargs="*", help="prompts, files (images, audio, .csv, graph .json, points) or raw values")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", help="a checkpoint: the reference layout of weights.py, or the model's own keys")
    w.add_argument("--checkpoint", help="a training run's runs/<run>/last (its Config, tokenizer and classes too)")
    w.add_argument("--random-init", action="store_true", help="the initial weights (smoke tests only)")
    add("--model-dir", default=str(HERE), help="the output folder (default: this script's)")
    add("--set", action="append", default=[], metavar="NAME=VALUE", help="a Config field (--weights of another size)")
    add("--layout", default="auto", help="the layout of --weights: auto, own, or a name of weights.LAYOUTS")
    add("--tokenizer", help="a tokenizer.json (default: the run's)")
    add("--labels", help="class names: one per line, or a JSON list or id2label object")
    add("--device", default="cpu", help="cpu, cuda or auto")
    add("--batch-size", type=int, default=8)
    add("-o", "--out", help="where to write: a .json file, or a folder for masks and images (with results.json)")
    add("--json", action="store_true", help="print JSON lines for text tasks too")
    g = p.add_argument_group("generation").add_argument
    g("--max-new-tokens", type=int, default=None, help="new tokens (default 32; transcripts: up to the context)")
    g("--do-sample", action="store_true", help="sample instead of greedy decoding")
    g("--temperature", type=float, default=None)
    g("--top-k", type=int, default=None)
    g("--top-p", type=float, default=None)
    g("--repetition-penalty", type=float, default=None)
    g("--seed", type=int, default=None, help="seeds sampling and diffusion noise")
    g("--num-beams", type=int, default=None,
      help="beam search with this many beams (models with generate(): decoders and encoder-decoders)")
    g("--length-penalty", type=float, default=None,
      help="beam search: a finished beam scores its log-probability / length ** this (default 1)")
    g("--no-cache", action="store_true",
      help="decode without the key-value cache, re-running the whole sequence each step (a check; slower)")
    g("--docs", help="retrieval-augmented generation: the folder of documents to answer from")
    t = p.add_argument_group("other tasks").add_argument
    t("--top", type=int, default=None, help="labels (5), recommended items or new links (10) to show")
    t("--threshold", type=float, default=None, help="detection/instance score, panoptic object or anomaly threshold")
    t("--steps", type=int, default=None, help="diffusion: sampling steps (default 50)")
    t("--guidance", type=float, default=None, help="diffusion: classifier-free guidance scale (default 1: none)")
    t("--init-image", help="diffusion: image-to-image from this image (a .pt latent for a latent model)")
    t("--strength", type=float, default=None,
      help="diffusion: how far to noise --init-image, 0 (kept) to 1 (pure noise); default 0.8, 1 with --mask")
    t("--mask", help="diffusion: inpainting: a mask image the init image's size, white is repainted, black kept")
    t("--context", help="question answering: the passage (text or a .txt file) the answer is in; document QA: the "
      "page image")
    t("--max-answer", type=int, default=None, help="(document) question answering: the longest answer in tokens "
      "(default 30)")
    t("--ocr-lang", help="document QA: Tesseract's language of the page (default eng)")
    t("--codec", help="codec language models (MusicGen): an EnCodec checkpoint folder (transformers' layout) that "
      "decodes the generated codes; each result is written as a WAV file")
    t("--pairs", help="link prediction: SOURCE-TARGET node pairs to score, comma-separated")
    t("--action", type=int, default=None, help="world model: the action taken")
    return p


OPTIONS = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "seed", "docs",
           "num_beams", "length_penalty", "top", "threshold", "steps", "guidance", "context", "pairs", "action",
           "init_image", "strength", "mask", "codec", "max_answer", "ocr_lang")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        pipe = pipelines.load_pipeline(args.model_dir, weights=args.weights, checkpoint=args.checkpoint,
                                       tokenizer=args.tokenizer, labels=args.labels, overrides=args.set,
                                       layout=args.layout, device=args.device, random_init=args.random_init)
        unprompted = pipe.task == "denoising" or (pipe.task == "generation" and "text" not in pipe.inputs)
        items = args.inputs or ([""] if unprompted else [])  # a sample without a prompt
        if not items:
            raise pipelines.PredictError("no inputs: give prompts, files or values after the options")
        # the options given: 0 is a value (--seed 0, --threshold 0, --strength 0), an unset switch is left out
        options = {k: v for k in OPTIONS if (v := getattr(args, k)) is not None and v is not False}
        if args.no_cache:
            options["use_cache"] = False
        results = pipe(items, batch_size=args.batch_size, **options)
        results = results if isinstance(results, list) else [results]
        show(results, pipe.writes, args)
    except (pipelines.PredictError, data.DataError, ValueError, OSError) as e:
        # ValueError: weights.py's WeightLayoutError and generate()'s argument errors; OSError: unwritable --out
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 1
    return 0


def _one_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return "; ".join(lines[:3]) + (f" (and {len(lines) - 3} more lines)" if len(lines) > 3 else "") if lines else \
        e.__class__.__name__


def show(results: list[dict[str, Any]], kind: str, args: argparse.Namespace) -> None:
    """Print the results and write --out: files for masks, images and audio, JSON for the rest."""
    if any("audio" in r for r in results):  # a codec model's waveforms: WAV files, as images are PNG
        kind = "png"
    written = save_files(results, Path(args.out or "predictions")) if kind == "png" else results
    for r in written:
        if kind == "text" and not args.json and "codes" not in r:
            print(r.get("generated_text", r.get("text", r.get("answer", ""))))
        else:
            print(json.dumps(r))
    if args.out and kind != "png":
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(written, indent=1) + "\n")


def save_files(results: list[dict[str, Any]], folder: Path) -> list[dict[str, Any]]:
    """Each result's mask or image(s) as PNG in `folder` (a latent as .pt too), its audio as WAV; the JSON gets
    their paths."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, r in enumerate(results):
        r = dict(r)
        stem = f"{k:04d}_{Path(str(r.get('input') or 'sample')).stem[:40] or 'sample'}".replace(" ", "_")
        stem = "".join(c for c in stem if c.isalnum() or c in "_-.")
        if "mask" in r:
            path = folder / f"{stem}_mask.png"
            r.pop("mask").save(path)
            r["mask"] = str(path)
        if "audio" in r:
            path = folder / f"{stem}.wav"
            audio_out.write_wav(path, r.pop("audio"), int(r["sample_rate"]))
            r["audio"] = str(path)
        if "image" in r:
            path = folder / f"{stem}.png"
            r.pop("image").save(path)
            r["image"] = str(path)
        if "frames" in r:
            frames = r.pop("frames")
            path = folder / f"{stem}.gif"
            frames[0].save(path, save_all=True, append_images=frames[1:], duration=125, loop=0)
            r["frames"] = str(path)
        tensor = r.pop("tensor", None)
        if tensor is not None and r.get("latent"):
            path = folder / f"{stem}.pt"
            torch.save(tensor, path)
            r["tensor"] = str(path)
        out.append(r)
    (folder / "results.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    sys.exit(main())
