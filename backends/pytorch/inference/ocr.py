"""Document question answering for predict.py and pipelines.py: a page image is read by Tesseract OCR (its words
and their boxes, from the `tesseract` command's TSV output), the boxes are put on LayoutLM's 0..1000 page grid, and
the question and the page's words go through the model as one sequence; the answer is the best span of page words.

    python predict.py --weights layoutlm/ --tokenizer tokenizer.json invoice.png "What is the total?"

Copied verbatim next to a generated model.py with tasks.py; depends on torch, Pillow and the Tesseract program
(Debian: apt-get install tesseract-ocr; the environment variable TESSERACT names another binary). No MetaGen import.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING or (__package__ or "").rsplit(".", 1)[-1] == "inference":  # the compiler's package
    from .inputs import IMAGE_SUFFIXES, PredictError, best_span, max_answer, read_image, short
else:  # beside model.py in the output folder
    from inputs import (  # type: ignore[no-redef]
        IMAGE_SUFFIXES,
        PredictError,
        best_span,
        max_answer,
        read_image,
        short,
    )

if TYPE_CHECKING:
    from .pipelines import Pipeline

__all__ = ["GRID", "Page", "normalize_box", "read_page", "run_document_qa"]

GRID = 1000  # LayoutLM's page coordinates: 0..1000 on both axes, whatever the page's size in pixels
INSTALL = "apt-get install tesseract-ocr"
SEP_NAMES = ("[SEP]", "</s>")  # the separator's box is the page's far corner, as LayoutLM's tokenizers give it


@dataclass
class Page:
    """The OCR of one page: its words in reading order, each word's box (left, top, right, bottom) in pixels, and
    the page's size (width, height) in pixels."""

    words: list[str]
    boxes: list[tuple[int, int, int, int]]
    size: tuple[int, int]


def tesseract() -> str:
    """The path of the tesseract program (TESSERACT, else `tesseract` on PATH); PredictError when there is none."""
    name = os.environ.get("TESSERACT", "tesseract")
    found = shutil.which(name)
    if found is None:
        raise PredictError(f"document_qa reads the page with Tesseract OCR, and `{name}` is not installed or not on "
                           f"PATH: install it ({INSTALL}), or set TESSERACT to the program's path")
    return found


def read_page(path: Path, lang: str = "eng") -> Page:
    """The words and boxes of a page image, as Tesseract reads it (page segmentation 3: automatic). The image is
    decoded with Pillow (EXIF orientation applied) and handed to tesseract as PNG on its standard input."""
    program = tesseract()
    im = read_image(path, 3)
    png = io.BytesIO()
    im.save(png, format="PNG")
    try:
        done = subprocess.run([program, "stdin", "stdout", "-l", lang, "--psm", "3", "tsv"], input=png.getvalue(),
                              capture_output=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PredictError(f"{path}: tesseract did not run ({e.__class__.__name__}: {e})") from None
    if done.returncode != 0:
        said = [line for line in done.stderr.decode("utf-8", "replace").splitlines() if line.strip()]
        raise PredictError(f"{path}: tesseract failed (exit {done.returncode}): {said[-1] if said else 'no message'}")
    return parse_tsv(done.stdout.decode("utf-8", "replace"), im.size)


def parse_tsv(text: str, size: tuple[int, int]) -> Page:
    """Tesseract's TSV (level page_num block_num par_num line_num word_num left top width height conf text): the
    rows of level 5 (words) with text, in the order tesseract writes them (its reading order)."""
    words: list[str] = []
    boxes: list[tuple[int, int, int, int]] = []
    lines = text.splitlines()
    for line in lines[1:]:  # the header first
        cells = line.split("\t")
        if len(cells) < 12 or cells[0] != "5" or not cells[11].strip():
            continue
        left, top, width, height = (int(v) for v in cells[6:10])
        words.append(cells[11].strip())
        boxes.append((left, top, left + width, top + height))
    return Page(words, boxes, size)


def normalize_box(box: tuple[int, int, int, int], size: tuple[int, int]) -> list[int]:
    """A box in pixels on the 0..1000 page grid, as LayoutLM's processors put it: int(1000 * x / width), int(1000 *
    y / height), clamped to the grid."""
    w, h = max(1, size[0]), max(1, size[1])
    x0, y0, x1, y1 = (int(GRID * v / d) for v, d in zip(box, (w, h, w, h)))
    return [min(GRID, max(0, v)) for v in (x0, y0, x1, y1)]


# ------------------------------------------------------------------------------------------------ the runner


def _pairs(args: list[str], options: dict[str, Any]) -> list[tuple[str, str]]:
    """(page, question) pairs: pages are the image files among the inputs (or --context PAGE), questions the rest;
    one question goes with every page, one page with every question, else they pair in order."""
    pages = [a for a in args if Path(a).suffix.lower() in IMAGE_SUFFIXES]
    questions = [a for a in args if a not in pages]
    if options.get("context"):
        pages = [str(options["context"])] + pages
    if not pages or not questions:
        raise PredictError("document_qa answers questions about page images: give an image file (or --context "
                           f"PAGE) and a question ({', '.join(IMAGE_SUFFIXES)})")
    if len(questions) == 1:
        return [(p, questions[0]) for p in pages]
    if len(pages) == 1:
        return [(pages[0], q) for q in questions]
    if len(pages) != len(questions):
        raise PredictError(f"{len(pages)} pages and {len(questions)} questions: give one question, one page, or one "
                           "question per page")
    return list(zip(pages, questions))


def _windows(counts: list[int], room: int) -> list[tuple[int, int]]:
    """Word ranges [start, end) whose tokens fit in `room`, each starting half way through the one before (so an
    answer near a window's edge is whole in the next one); a single word longer than `room` is a window alone."""
    out: list[tuple[int, int]] = []
    start, n = 0, len(counts)
    while True:
        end, used = start, 0
        while end < n and (end == start or used + counts[end] <= room):
            used += counts[end]
            end += 1
        out.append((start, end))
        if end >= n:
            return out
        start = max(start + 1, (start + end) // 2)


def _plain(tokenizer: Any) -> Any:
    """The tokenizer without truncation and padding (a tokenizer.json may set them): the windows are cut here, and
    the compiled LayoutLM takes no padding mask."""
    if tokenizer.truncation is None and tokenizer.padding is None:
        return tokenizer
    from tokenizers import Tokenizer

    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_truncation()
    plain.no_padding()
    return plain


def _encode(tokenizer: Any, question: list[str], words: list[str]) -> Any:
    return tokenizer.encode(question, words, is_pretokenized=True)


def answer(pipe: Pipeline, page: Page, question: str, longest: int = 30) -> dict[str, Any]:
    """The best span of page words for the question: the start and end logits' sum over the page's tokens (a span
    of at most `longest` tokens, never in the question or the special tokens), window by window where the question
    and the page pass the model's context."""
    if pipe.tokenizer is None:
        pipe.encode(question)  # the one-line error: no tokenizer
    q = question.split()
    if not page.words:
        return {"answer": "", "score": None, "words": 0, "note": "the OCR found no words on the page"}
    tokenizer = _plain(pipe.tokenizer)
    full = _encode(tokenizer, q, page.words)
    counts = [0] * len(page.words)
    for s, w in zip(full.sequence_ids, full.word_ids):
        if s == 1 and w is not None:
            counts[w] += 1
    context = int(pipe.config.get("context", len(full.ids)))
    coords = int(pipe.config.get("coords", GRID + 1))
    room = context - (len(full.ids) - sum(counts))
    if room <= 0:
        raise PredictError(f"the question `{short(question)}` leaves no room for the page in the model's context of "
                           f"{context} tokens")
    seps = {tokenizer.token_to_id(n) for n in SEP_NAMES} - {None}
    grid = [normalize_box(b, page.size) for b in page.boxes]
    best: dict[str, Any] | None = None
    windows = _windows(counts, room)
    for start, end in windows:
        enc = _encode(tokenizer, q, page.words[start:end])
        if len(enc.ids) > context:
            raise PredictError(f"the page word `{short(page.words[start])}` alone passes the model's context")
        boxes = [grid[start + w] if s == 1 and w is not None else [GRID] * 4 if i in seps else [0] * 4
                 for i, s, w in zip(enc.ids, enc.sequence_ids, enc.word_ids)]
        ids = torch.tensor([enc.ids], device=pipe.device)
        bbox = torch.tensor([boxes], device=pipe.device).clamp(0, coords - 1)
        out = pipe.model(ids, bbox)
        logits = (out[0] if isinstance(out, (tuple, list)) else out)[0].float()  # (T, 2)
        inside = torch.tensor([s == 1 for s in enc.sequence_ids], device=logits.device)  # the page's tokens
        span = best_span(logits, inside, longest)
        if span is None:  # the window's words gave no tokens
            continue
        s, e, score = span
        if best is None or score > best["score"]:
            first, last = start + enc.word_ids[s], start + enc.word_ids[e]
            box = page.boxes[first:last + 1]
            best = {"answer": " ".join(page.words[first:last + 1]), "score": round(score, 6), "start_word": first,
                    "end_word": last, "box": [min(b[0] for b in box), min(b[1] for b in box),
                                               max(b[2] for b in box), max(b[3] for b in box)],
                    "window": [start, end]}
    assert best is not None  # every window holds at least one page word
    best.update(words=len(page.words), windows=len(windows))
    return best


def run_document_qa(pipe: Pipeline, args: list[str], size: int, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Page images and questions in; per pair the answer (page words), its score, the words' indices on the page
    and their box in the image's pixels. Each page is OCR'd once; each window runs alone (the model takes no
    padding mask, so sequences are never padded into a batch)."""
    pages: dict[str, Page] = {}
    longest = max_answer(options)
    results = []
    for page, question in _pairs(args, options):
        if page not in pages:
            pages[page] = read_page(Path(page), str(options.get("ocr_lang") or "eng"))
        results.append({"input": f"{page} + {short(question)}", "page": page, "question": question,
                        **answer(pipe, pages[page], question, longest)})
    return results
