"""More task pipelines (backends/pytorch/inference): document question answering from a page image through Tesseract
OCR (ocr.py), and audio out of a codec language model through an EnCodec checkpoint (audio_out.py).

The page is a real sentence rendered with a TrueType font (DejaVu Sans: fonts-dejavu-core, else the copy matplotlib
ships) and read back by the tesseract program; the LayoutLM weights are transformers' LayoutLMForQuestionAnswering
with random weights, saved with save_pretrained and read through weights.py, and the answer is checked against that
model run on the same words with boxes normalised here, LayoutLM's way. The codec is transformers' EncodecModel from a
small config with random weights, saved with save_pretrained.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from training_helpers import model_folder

pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

SENTENCE = ("Invoice number 4711", "Total amount due: 42 dollars")
WORDS = ["Invoice", "number", "4711", "Total", "amount", "due:", "42", "dollars"]
TINY_LAYOUTLM = ["layers=2", "d_model=32", "heads=2", "mlp_dim=64", "context=64"]
TINY_MUSICGEN = ["codebooks=4", "codebook_size=64", "layers=1", "d_model=32", "heads=2", "ffn_dim=64", "context=64"]
HOP = 8  # the codec's upsampling ratios 4 x 2


def _font(size: int) -> Any:
    from PIL import ImageFont

    debian = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if debian.is_file():
        return ImageFont.truetype(str(debian), size)
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


def _page(path: Path, lines: tuple[str, ...] = SENTENCE) -> Path:
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (900, 80 + 80 * len(lines)), "white")
    draw = ImageDraw.Draw(im)
    for k, line in enumerate(lines):
        draw.text((20, 30 + 80 * k), line, font=_font(32), fill="black")
    im.save(path)
    return path


def _needs_tesseract() -> None:
    if shutil.which("tesseract") is None:
        pytest.skip("tesseract-ocr is not installed (.ci/setup installs it)")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inference_more")


@pytest.fixture(scope="module")
def wordpiece(root: Path) -> Path:
    """A lower-cased WordPiece tokenizer with BERT's [CLS] A [SEP] B [SEP] template, trained on a few lines."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    corpus = [" ".join(SENTENCE), "what is the invoice number?", "what is the total amount due?",
              "the amount is due in dollars; the number of the invoice is on the page"]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    path = root / "wordpiece.json"
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def layoutlm(root: Path, wordpiece: Path) -> tuple[Path, Any, list[str]]:
    """examples/layoutlm_docvqa.msl compiled, and transformers' LayoutLMForQuestionAnswering at the same small size
    with random weights, saved; returns the folder, the reference and the Config overrides."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(wordpiece)).get_vocab_size()
    cfg = transformers.LayoutLMConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    ref = transformers.LayoutLMForQuestionAnswering(cfg).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.2 * torch.randn_like(p))  # off the init: the logits differ from token to token
    ref.save_pretrained(root / "layoutlm_weights")
    return model_folder(root / "models", "layoutlm_docvqa"), ref, [*TINY_LAYOUTLM, f"vocab={vocab}"]


# ---------------------------------------------------------------------------------------------------- OCR


def test_ocr_reads_the_rendered_sentence_with_boxes(root: Path) -> None:
    from metagen_backends.pytorch.inference import ocr

    _needs_tesseract()
    page = ocr.read_page(_page(root / "ocr.png"))
    assert page.words == WORDS
    assert page.size == (900, 240)
    lines = [b for b in page.boxes if b[1] < 80], [b for b in page.boxes if b[1] >= 80]
    assert [len(x) for x in lines] == [3, 5]  # the two lines, left to right in each
    for line in lines:
        assert all(a[2] < b[0] for a, b in itertools.pairwise(line))
        assert all(20 <= b[0] < b[2] < 900 and b[1] < b[3] for b in line)


def test_boxes_go_on_layoutlms_page_grid() -> None:
    from metagen_backends.pytorch.inference.ocr import normalize_box

    assert normalize_box((20, 36, 133, 60), (900, 240)) == [22, 150, 147, 250]
    assert normalize_box((0, 0, 900, 240), (900, 240)) == [0, 0, 1000, 1000]
    assert normalize_box((-5, 3, 950, 250), (900, 240)) == [0, 12, 1000, 1000]  # clamped to the grid


def test_tsv_rows_other_than_words_are_left_out() -> None:
    from metagen_backends.pytorch.inference.ocr import parse_tsv

    header = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext"
    rows = ["1\t1\t0\t0\t0\t0\t0\t0\t900\t240\t-1\t", "4\t1\t1\t1\t1\t0\t20\t36\t338\t24\t-1\t",
            "5\t1\t1\t1\t1\t1\t20\t36\t113\t24\t96.5\tInvoice", "5\t1\t1\t1\t1\t2\t150\t36\t10\t24\t95.0\t "]
    page = parse_tsv("\n".join([header, *rows]) + "\n", (900, 240))
    assert (page.words, page.boxes) == (["Invoice"], [(20, 36, 133, 60)])


def test_windows_cover_every_word_and_overlap() -> None:
    from metagen_backends.pytorch.inference.ocr import _windows

    counts = [1, 2, 1, 3, 1, 1, 2, 5, 1]
    windows = _windows(counts, 5)
    assert windows[0][0] == 0 and windows[-1][1] == len(counts)
    for (a0, a1), (b0, b1) in itertools.pairwise(windows):
        assert a0 < b0 <= a1 - 1 or a1 - a0 == 1  # each starts inside the one before
    for a, b in windows:
        assert sum(counts[a:b]) <= 5 or b - a == 1  # a word of more tokens than the room stands alone
    assert _windows([2, 2], 10) == [(0, 2)]


# ------------------------------------------------------------------------------------------- document QA


def _reference_answer(ref: Any, tokenizer: Any, question: str, words: list[str],
                      boxes: list[tuple[int, int, int, int]], size: tuple[int, int]) -> tuple[str, float]:
    """transformers' model on the question and the OCR words, boxes normalised as LayoutLM's processors do
    (int(1000 * x / width)); question and [CLS] tokens at (0, 0, 0, 0), [SEP] at (1000, 1000, 1000, 1000); the best
    span of page tokens (start <= end, at most 30 tokens)."""
    w, h = size
    grid = [[int(1000 * b[0] / w), int(1000 * b[1] / h), int(1000 * b[2] / w), int(1000 * b[3] / h)] for b in boxes]
    enc = tokenizer.encode(question.split(), words, is_pretokenized=True)
    sep = tokenizer.token_to_id("[SEP]")
    bbox = [grid[wi] if s == 1 else [1000] * 4 if i == sep else [0] * 4
            for i, s, wi in zip(enc.ids, enc.sequence_ids, enc.word_ids)]
    with torch.no_grad():
        out = ref(input_ids=torch.tensor([enc.ids]), bbox=torch.tensor([bbox]))
    start, end = out.start_logits[0], out.end_logits[0]
    page = [k for k, s in enumerate(enc.sequence_ids) if s == 1]
    best = max(((start[a] + end[b]).item(), a, b) for a in page for b in page if a <= b < a + 30)
    score, a, b = best
    return " ".join(words[enc.word_ids[a] : enc.word_ids[b] + 1]), score


def test_document_qa_answers_from_the_ocr_words_as_transformers(root: Path, wordpiece: Path,
                                                                 layoutlm: tuple[Path, Any, list[str]]) -> None:
    """The whole pipeline: image -> tesseract -> words and boxes on the page grid -> LayoutLM (weights from
    transformers' checkpoint) -> the best span of page words; the answer and its score equal transformers' model
    given the same words and boxes, and the answer's box is its words' union in pixels."""
    from metagen_backends.pytorch.inference import load_pipeline, ocr
    from tokenizers import Tokenizer

    _needs_tesseract()
    folder, ref, sets = layoutlm
    png = _page(root / "invoice.png")
    pipe = load_pipeline(folder, weights=root / "layoutlm_weights", overrides=sets, tokenizer=wordpiece)
    questions = ["what is the total amount due?", "what is the invoice number?"]
    results = pipe([str(png), *questions])
    assert [r["question"] for r in results] == questions
    page = ocr.read_page(png)
    assert page.words == WORDS
    for r, q in zip(results, questions):
        want, score = _reference_answer(ref, Tokenizer.from_file(str(wordpiece)), q, page.words, page.boxes,
                                        page.size)
        assert r["answer"] == want
        assert r["score"] == pytest.approx(score, abs=1e-4)
        assert r["words"] == len(WORDS)
        span = page.boxes[r["start_word"] : r["end_word"] + 1]
        assert r["answer"] == " ".join(WORDS[r["start_word"] : r["end_word"] + 1])
        assert r["box"] == [min(b[0] for b in span), min(b[1] for b in span), max(b[2] for b in span),
                            max(b[3] for b in span)]


def test_document_qa_splits_a_long_page_into_windows(root: Path, wordpiece: Path,
                                                     layoutlm: tuple[Path, Any, list[str]]) -> None:
    """A page of more tokens than the context of 64: windows of page words that fit beside the question, each half
    way into the one before; the answer is the best span of the window that scores highest, and in that window it
    is transformers' answer with transformers' score."""
    from metagen_backends.pytorch.inference import load_pipeline, ocr
    from tokenizers import Tokenizer

    _needs_tesseract()
    folder, ref, sets = layoutlm
    png = _page(root / "long.png", SENTENCE * 8)
    pipe = load_pipeline(folder, weights=root / "layoutlm_weights", overrides=sets, tokenizer=wordpiece)
    question = "what is the total?"
    (r,) = pipe([str(png), question])
    page = ocr.read_page(png)
    assert page.words == WORDS * 8 and r["words"] == len(page.words)
    assert r["windows"] >= 2
    a, b = r["window"]
    want, score = _reference_answer(ref, Tokenizer.from_file(str(wordpiece)), question, page.words[a:b],
                                    page.boxes[a:b], page.size)
    assert r["answer"] == want and r["score"] == pytest.approx(score, abs=1e-4)
    assert a <= r["start_word"] <= r["end_word"] < b


def test_document_qa_ignores_the_tokenizers_truncation_and_padding(root: Path, wordpiece: Path,
                                                                    layoutlm: tuple[Path, Any, list[str]]) -> None:
    """A tokenizer.json that truncates and pads (as transformers' may) gives the same answer: the windows are cut
    by the pipeline, and no padding reaches the model, which takes no padding mask."""
    from metagen_backends.pytorch.inference import load_pipeline
    from tokenizers import Tokenizer

    _needs_tesseract()
    folder, _, sets = layoutlm
    tok = Tokenizer.from_file(str(wordpiece))
    tok.enable_truncation(16)
    tok.enable_padding(length=48, pad_id=0, pad_token="[PAD]")
    padded = root / "padded.json"
    tok.save(str(padded))
    png = _page(root / "padded.png")
    answers = [load_pipeline(folder, weights=root / "layoutlm_weights", overrides=sets, tokenizer=t)(
        [str(png), "what is the total amount due?"]) for t in (wordpiece, padded)]
    assert answers[0] == answers[1]


def test_document_qa_without_tesseract_is_a_clear_error(root: Path, wordpiece: Path, monkeypatch: pytest.MonkeyPatch,
                                                        layoutlm: tuple[Path, Any, list[str]],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from metagen_backends.pytorch.inference import load_pipeline
    from metagen_backends.pytorch.inference.command import main
    from metagen_backends.pytorch.inference.inputs import PredictError

    folder, _, sets = layoutlm
    png = _page(root / "no_ocr.png")
    empty = root / "empty_path"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("TESSERACT", raising=False)
    pipe = load_pipeline(folder, random_init=True, overrides=sets, tokenizer=wordpiece)
    with pytest.raises(PredictError, match=r"Tesseract OCR.*apt-get install tesseract-ocr"):
        pipe([str(png), "what is the total?"])
    capsys.readouterr()
    args = [str(folder), "--random-init", "--tokenizer", str(wordpiece), *(f"--set={s}" for s in sets), str(png),
            "what is the total?"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: document_qa reads the page with Tesseract OCR") and err.count("\n") == 1, err


def test_document_qa_bad_inputs_are_one_line(root: Path, wordpiece: Path, layoutlm: tuple[Path, Any, list[str]],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from metagen_backends.pytorch.inference.command import main

    _needs_tesseract()
    folder, _, sets = layoutlm
    bad = root / "not_an_image.png"
    bad.write_text("not a PNG")
    base = [str(folder), "--random-init", "--tokenizer", str(wordpiece), *(f"--set={s}" for s in sets)]
    cases = {(str(bad), "what?"): "not a readable image", ("what is the total?",): "give an image file",
             (str(_page(root / "p1.png")), str(_page(root / "p2.png")), "a?", "b?", "c?"):
             "2 pages and 3 questions: give one question, one page, or one question per page"}
    for inputs, message in cases.items():
        capsys.readouterr()
        assert main([*base, *inputs]) == 1, inputs
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_tesseract_that_does_not_run_or_fails_is_one_line(root: Path, wordpiece: Path,
                                                          layoutlm: tuple[Path, Any, list[str]],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """TESSERACT naming a file that cannot be executed, or a program that exits with an error: the file and why."""
    from metagen_backends.pytorch.inference import load_pipeline
    from metagen_backends.pytorch.inference.inputs import PredictError

    folder, _, sets = layoutlm
    pipe = load_pipeline(folder, random_init=True, overrides=sets, tokenizer=wordpiece)
    png = _page(root / "fake_ocr.png")
    programs = {"not_a_program": ("not a program\n", "fake_ocr.png: tesseract did not run (OSError: "),
                "failing_tesseract": ("#!/bin/sh\necho 'Error opening data file' >&2\nexit 3\n",
                                      "fake_ocr.png: tesseract failed (exit 3): Error opening data file")}
    for name, (text, message) in programs.items():
        program = root / name
        program.write_text(text)
        program.chmod(0o755)
        monkeypatch.setenv("TESSERACT", str(program))
        with pytest.raises(PredictError) as e:
            pipe([str(png), "what is the total?"])
        assert message in str(e.value)


def test_question_or_word_that_passes_the_context_is_one_line(wordpiece: Path,
                                                             layoutlm: tuple[Path, Any, list[str]]) -> None:
    """A question that leaves the page no room in the context of 64, or one page word of more tokens than the room
    beside the question (80 WordPiece pieces): PredictError naming them (the OCR's page built here)."""
    from metagen_backends.pytorch.inference import load_pipeline, ocr
    from metagen_backends.pytorch.inference.inputs import PredictError

    folder, _, sets = layoutlm
    pipe = load_pipeline(folder, random_init=True, overrides=sets, tokenizer=wordpiece)
    page = ocr.Page(["uoea" * 20, "Total"], [(0, 0, 70, 10), (80, 0, 90, 10)], (100, 20))
    assert len(pipe.tokenizer.encode(["uoea" * 20], is_pretokenized=True).ids) == 1 + 80 + 1  # [CLS] ... [SEP]
    with pytest.raises(PredictError) as e:
        ocr.answer(pipe, page, " ".join(["total"] * 70))
    assert "` leaves no room for the page in the model's context of 64 tokens" in str(e.value)
    with pytest.raises(PredictError) as e:
        ocr.answer(pipe, page, "what?")
    assert "the page word `uoeauoea" in str(e.value) and "` alone passes the model's context" in str(e.value)


# ------------------------------------------------------------------------------------------------ audio out


@pytest.fixture(scope="module")
def encodec(root: Path) -> tuple[Path, Any]:
    """transformers' EncodecModel at a small config (8 kHz, hop 8, codebooks of 64 entries, 6 quantizers at the
    largest bandwidth) with random weights, saved with save_pretrained."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.EncodecConfig(hidden_size=16, num_filters=4, upsampling_ratios=[4, 2], codebook_size=64,
                                     codebook_dim=16, num_lstm_layers=1, sampling_rate=8000, target_bandwidths=[40.0],
                                     audio_channels=1, kernel_size=3, last_kernel_size=3)
    torch.manual_seed(0)
    codec = transformers.EncodecModel(cfg).eval()
    codec.save_pretrained(root / "encodec")
    return root / "encodec", codec


@pytest.fixture(scope="module")
def musicgen(root: Path) -> Path:
    return model_folder(root / "models", "musicgen_small")


def test_codec_lm_writes_a_wav_of_frames_times_hop(root: Path, musicgen: Path, encodec: tuple[Path, Any],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """predict.py --codec: the generated codes decoded by EnCodec and written as 16-bit WAV at the codec's rate:
    10 frames x hop 8 = 80 samples, the waveform EncodecModel.decode gives for the printed codes."""
    import json

    import soundfile
    from metagen_backends.pytorch.inference.command import main

    path, codec = encodec
    out = root / "music"
    capsys.readouterr()
    assert main([str(musicgen), "--random-init", *(f"--set={s}" for s in TINY_MUSICGEN), "--codec", str(path),
                 "--max-new-tokens", "10", "-o", str(out)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    r = json.loads(line)
    codes = torch.tensor(r["codes"])
    assert codes.shape == (4, 10) and r["sample_rate"] == 8000 and r["seconds"] == pytest.approx(80 / 8000)
    wav, rate = soundfile.read(r["audio"], dtype="float32", always_2d=True)
    assert rate == 8000 and wav.shape == (10 * HOP, 1)
    with torch.no_grad():
        want = codec.decode(codes[None, None], [None]).audio_values[0, 0].clamp(-1, 1)
    assert want.abs().max() > 0.01
    assert torch.from_numpy(wav[:, 0]).sub(want).abs().max() <= 1 / 32768 + 1e-6  # 16-bit PCM
    assert json.loads((out / "results.json").read_text())[0]["audio"] == r["audio"]


def test_codec_lm_pipeline_waveform_equals_encodec(musicgen: Path, encodec: tuple[Path, Any]) -> None:
    from metagen_backends.pytorch.inference import load_pipeline

    path, codec = encodec
    pipe = load_pipeline(musicgen, random_init=True, overrides=TINY_MUSICGEN)
    r = pipe("", max_new_tokens=6, codec=str(path))
    with torch.no_grad():
        want = codec.decode(torch.tensor(r["codes"])[None, None], [None]).audio_values[0].clamp(-1, 1)
    assert r["audio"].shape == (1, 6 * HOP)
    assert torch.equal(r["audio"], want)


def test_codec_lm_without_codec_gives_the_codes_and_says_so(musicgen: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from metagen_backends.pytorch.inference.command import main

    capsys.readouterr()
    assert main([str(musicgen), "--random-init", *(f"--set={s}" for s in TINY_MUSICGEN), "--max-new-tokens", "5"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    r = json.loads(line)
    assert torch.tensor(r["codes"]).shape == (4, 5) and "audio" not in r
    assert "not audio" in r["note"] and "--codec" in r["note"]


def test_codec_that_does_not_fit_is_one_line(root: Path, musicgen: Path, encodec: tuple[Path, Any],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from metagen_backends.pytorch.inference.command import main

    path, _ = encodec

    def sets(**kw: int) -> list[str]:
        values = dict(s.split("=") for s in TINY_MUSICGEN) | {k: str(v) for k, v in kw.items()}
        return [f"--set={k}={v}" for k, v in values.items()]

    base = [str(musicgen), "--random-init", "--max-new-tokens", "3"]
    cases = {(*sets(), "--codec", str(root)): "no EnCodec checkpoint",  # a folder without config.json
             (*sets(codebook_size=100), "--codec", str(path)): "hold 64 entries, the model's 100",
             (*sets(codebooks=8), "--codec", str(path)): "at most 6 codebooks; the model writes 8"}
    for extra, message in cases.items():
        capsys.readouterr()
        assert main([*base, *extra]) == 1, extra
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_codes_and_codecs_that_do_not_decode_are_one_line(root: Path, encodec: tuple[Path, Any],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """audio_out's own checks: codes that are not (codebooks, frames), codes beyond the codebooks, codes EnCodec
    cannot decode (no frames), a checkpoint folder without its weights, and WAV writing without soundfile."""
    from metagen_backends.pytorch.inference import audio_out
    from metagen_backends.pytorch.inference.inputs import PredictError

    path, _ = encodec
    codec = audio_out.load_codec(path)
    cases = {(5,): ("codec codes must be (codebooks, frames), got (5,)", 0),
             (4, 3): (": the codec's codebooks hold 64 entries; the codes run from 64 to 64: the codec does not "
                      "match the model", 64),
             (4, 0): (": EnCodec could not decode 4 codebooks (", 0)}
    for shape, (message, value) in cases.items():
        with pytest.raises(PredictError) as e:
            codec.decode(torch.full(shape, value, dtype=torch.long))
        assert message in str(e.value)
    bare = root / "encodec_without_weights"
    bare.mkdir(exist_ok=True)
    shutil.copy(path / "config.json", bare / "config.json")
    with pytest.raises(PredictError) as e:
        audio_out.load_codec(bare)
    assert "encodec_without_weights: not a readable EnCodec checkpoint (" in str(e.value)
    monkeypatch.setitem(sys.modules, "soundfile", None)  # as where soundfile is not installed
    with pytest.raises(PredictError) as e:
        audio_out.write_wav(root / "x.wav", torch.zeros(1, 8), 8000)
    assert "writing WAV files needs soundfile: pip install soundfile" in str(e.value)


def test_the_output_folder_carries_ocr_and_audio_out(musicgen: Path) -> None:
    from metagen_backends.pytorch.inference import INFERENCE_FILES

    assert {"ocr.py", "audio_out.py"} <= set(INFERENCE_FILES)
    for name in ("ocr.py", "audio_out.py"):
        assert (musicgen / name).is_file()
    done = subprocess.run([sys.executable, "-c", "import ocr, audio_out, tasks"], cwd=musicgen, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------------------- Stable Diffusion 1.5 weights

# a small U-Net of the same kinds of blocks as SD 1.5 (test_diffusion's): three levels, attention at the lower two
SMALL_UNET = dict(image_size=16, base=32, channel_mult=(1, 2, 2), attention_levels=(False, True, True),
                  layers_per_block=2, heads=2, vocab=97, context=8, text_layers=2, text_width=32, text_heads=2,
                  text_mlp=64)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=77)


def _diffusers_unet_config(c: Any) -> dict[str, Any]:
    """The compiled U-Net's Config as diffusers' UNet2DConditionModel arguments (SD 1.5's own config at sd15's)."""
    attn = c.attention_levels
    return dict(sample_size=c.image_size, in_channels=c.channels, out_channels=c.channels,
                block_out_channels=tuple(c.base * m for m in c.channel_mult), layers_per_block=c.layers_per_block,
                cross_attention_dim=c.text_width, attention_head_dim=c.heads, norm_num_groups=c.groups,
                transformer_layers_per_block=c.transformer_depth,
                down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
                up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)))


def _clip_text_config(c: Any) -> Any:
    import transformers

    return transformers.CLIPTextConfig(vocab_size=c.vocab, hidden_size=c.text_width, intermediate_size=c.text_mlp,
                                       num_hidden_layers=c.text_layers, num_attention_heads=c.text_heads,
                                       max_position_embeddings=c.context, bos_token_id=0, eos_token_id=1)


@pytest.fixture(scope="module")
def sd15(root: Path) -> Any:
    """examples/latent_diffusion.msl (preset sd15) compiled: model.py and weights.py imported."""
    from conftest import load_module

    folder = model_folder(root / "models", "latent_diffusion")
    return folder, load_module(folder / "model.py", "more_sd15_model"), load_module(folder / "weights.py",
                                                                                  "more_sd15_weights")


def _sd_pipeline(root: Path, ours: Any, seed: int = 0) -> tuple[Path, Any, Any]:
    """diffusers' UNet2DConditionModel and transformers' CLIPTextModel at the compiled model's size, random weights
    off their init, saved as a StableDiffusionPipeline folder holds them (unet/, text_encoder/, model_index.json)."""
    import json

    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(**_diffusers_unet_config(ours.config)).eval()
    text = transformers.CLIPTextModel(_clip_text_config(ours.config)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in [*unet.parameters(), *text.parameters()]:
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    folder = root / f"sd_pipeline_{seed}"
    unet.save_pretrained(folder / "unet")
    text.save_pretrained(folder / "text_encoder")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                         "unet": ["diffusers", "UNet2DConditionModel"],
                                                         "text_encoder": ["transformers", "CLIPTextModel"]}))
    return folder, unet, text


def _sd_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 4, 16, 16, generator=g), torch.tensor([3, 917]), torch.randint(0, 97, (2, 8), generator=g)


def test_sd15_pipeline_folder_loads_into_the_compiled_unet(root: Path, sd15: Any) -> None:
    """A diffusers pipeline folder (unet/diffusion_pytorch_model.safetensors, text_encoder/model.safetensors) read by
    weights.py with layout auto (LAYOUT sd15): the compiled model's noise prediction equals diffusers' U-Net given
    transformers' CLIPTextModel's last hidden state, within 1e-4 (float32)."""
    _, model, w = sd15
    assert w.LAYOUT == "sd15"
    ours = model.build_model(dataclasses.replace(model.Config(), **SMALL_UNET)).eval()
    folder, unet, text = _sd_pipeline(root, ours)
    w.load_checkpoint(ours, folder)
    x, t, ids = _sd_inputs()
    with torch.no_grad():
        states = text(ids).last_hidden_state
        assert torch.equal(ours.encoder_text(ids), states)
        want = unet(x, t, encoder_hidden_states=states).sample
        got = ours(x, t, ids)
    assert want.abs().max() > 0.1
    assert (got - want).abs().max() <= 1e-4


def test_sd15_export_is_read_back_by_diffusers_and_transformers(root: Path, sd15: Any, tmp_path: Path) -> None:
    """export_checkpoint to a folder writes unet/ and text_encoder/ as diffusers saves a pipeline; beside their
    configs, UNet2DConditionModel.from_pretrained and CLIPTextModel.from_pretrained read them: the same weights,
    exactly, the U-Net's also when sharded (diffusion_pytorch_model.safetensors.index.json)."""
    import diffusers
    import transformers

    _, model, w = sd15
    ours = model.build_model(dataclasses.replace(model.Config(), **SMALL_UNET)).eval()
    folder, unet, text = _sd_pipeline(root, ours, seed=1)
    w.load_checkpoint(ours, folder)
    for out, shard in ((tmp_path / "export", None), (tmp_path / "sharded", 200_000)):
        w.export_checkpoint(ours, out, max_shard_bytes=shard)
        assert (out / "text_encoder" / "model.safetensors").is_file()
        if shard:
            assert len(list((out / "unet").glob("diffusion_pytorch_model-*.safetensors"))) > 2
        unet.save_config(out / "unet")
        text.config.save_pretrained(out / "text_encoder")
        back_unet = diffusers.UNet2DConditionModel.from_pretrained(out / "unet").eval()
        back_text = transformers.CLIPTextModel.from_pretrained(out / "text_encoder").eval()
        for mine, theirs in ((back_unet, unet), (back_text, text)):
            a, b = mine.state_dict(), theirs.state_dict()
            assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)
        again = w.load_checkpoint(model.build_model(dataclasses.replace(model.Config(), **SMALL_UNET)).eval(), out)
        x, t, ids = _sd_inputs()
        with torch.no_grad():
            assert torch.equal(again(x, t, ids), ours(x, t, ids))


def test_sd15_keys_and_shapes_at_full_size(sd15: Any) -> None:
    """At SD 1.5's size on the meta device: the export has exactly the keys and shapes of diffusers'
    UNet2DConditionModel (runwayml/stable-diffusion-v1-5's unet config) under unet. and of CLIPTextModel (ViT-L/14's
    text tower) under text_encoder.text_model., as the published pipeline's files hold them."""
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    _, model, w = sd15
    with torch.device("meta"):
        ours = model.build_model()
        unet = diffusers.UNet2DConditionModel(**_diffusers_unet_config(ours.config))
        text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**SD15_TEXT))
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964
    exported = {k: tuple(v.shape) for k, v in w.to_reference(ours, "sd15").items()}
    theirs = {**{f"unet.{k}": tuple(v.shape) for k, v in unet.state_dict().items()},
              **{f"text_encoder.text_model.{k}": tuple(v.shape) for k, v in text.state_dict().items()}}
    assert exported == theirs


def test_sd15_checkpoint_errors_name_the_part(root: Path, sd15: Any, tmp_path: Path) -> None:
    """A pipeline folder without its text encoder, and a U-Net of another width, are WeightLayoutErrors naming the
    first tensor at fault."""
    import shutil as sh

    _, model, w = sd15
    ours = model.build_model(dataclasses.replace(model.Config(), **SMALL_UNET)).eval()
    folder, _, _ = _sd_pipeline(root, ours, seed=2)
    sh.copytree(folder / "unet", tmp_path / "no_text" / "unet")
    with pytest.raises(w.WeightLayoutError, match=r"misses \d+ tensor\(s\) .*text_encoder\.text_model\.embeddings\."
                                                  r"token_embedding\.weight \(for encoder_text\.token_embedding"):
        w.load_checkpoint(ours, tmp_path / "no_text")
    wide = model.build_model(dataclasses.replace(model.Config(), **{**SMALL_UNET, "base": 64})).eval()
    with pytest.raises(w.WeightLayoutError, match=r"unet\.conv_in\.weight has shape \(32, 4, 3, 3\); the model's "
                                                  r"encoder_image\.conv_in\.weight needs \(64, 4, 3, 3\)"):
        w.load_checkpoint(wide, folder, layout="sd15")


def test_sd15_weights_run_through_predict(root: Path, sd15: Any, tmp_path: Path) -> None:
    """predict.py's pipeline with --weights a diffusers pipeline folder and the small Config: two DDIM steps give a
    latent of the model's shape (saved as .pt beside its preview PNG)."""
    from metagen_backends.pytorch.inference import load_pipeline

    folder, model, _ = sd15
    small = model.build_model(dataclasses.replace(model.Config(), **SMALL_UNET)).eval()
    weights, _, _ = _sd_pipeline(root, small, seed=3)
    sets = [f"{k}={','.join(str(int(x)) for x in v) if isinstance(v, tuple) else v}" for k, v in SMALL_UNET.items()]
    pipe = load_pipeline(folder, weights=weights, overrides=sets)
    r = pipe("", steps=2)
    assert r["latent"] and tuple(r["tensor"].shape) == (4, 16, 16) and torch.isfinite(r["tensor"]).all()


def test_unet_family_specs_load_diffusers_checkpoints_and_their_own(root: Path) -> None:
    """A spec of the U-Net family at its own dims (tiny_diffusion: ldm_tiny with an open width) names the sd15
    layout; its own state_dict (what train.py writes) still loads with layout auto."""
    from conftest import ROOT, compile_path, load_module
    from metagen_backends.pytorch.weights import layout_for

    assert layout_for(compile_path(ROOT / "examples" / "tiny_diffusion.msl")) == "sd15"
    folder = model_folder(root / "models", "tiny_diffusion")
    model, w = load_module(folder / "model.py", "more_td_model"), load_module(folder / "weights.py", "more_td_w")
    small = {"image_size": 8, "base": 32, "channel_mult": (1, 2), "attention_levels": (False, True), "groups": 8,
             "text_width": 32, "text_heads": 2, "heads": 2, "vocab": 100, "text_layers": 1}
    a = model.build_model(dataclasses.replace(model.Config(), **small), seed=1).eval()
    b = model.build_model(dataclasses.replace(model.Config(), **small), seed=2).eval()
    w.export_checkpoint(a, root / "own.safetensors", layout="own")
    w.load_checkpoint(b, root / "own.safetensors")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    w.export_checkpoint(a, root / "tiny_pipeline")  # LAYOUT sd15: diffusers' folders, read back the same
    c = w.load_checkpoint(model.build_model(dataclasses.replace(model.Config(), **small), seed=3).eval(),
                          root / "tiny_pipeline")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
