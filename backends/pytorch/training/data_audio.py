"""Audio for train.py and evaluate.py: WAV/FLAC files and their transcripts -> speech-recognition batches.

Copied verbatim next to a generated model.py, beside data.py, which calls it and whose DataError, split and
tokenizer it uses; depends on torch, soundfile (reading) and tokenizers (the transcripts' BPE).

A speech recogniser's batch is {"audio": (B, samples) waveforms at the model's rate, "target": (B, T) token ids}.
The data is a transcript list, `transcripts.tsv` (path TAB text, no header) or a `.jsonl` of {"audio": path,
"text": transcript} per line (`path` for `audio` also works; read by data.py's JSONL row reader, as every JSONL
list), in a folder with the audio files (paths relative to the list: `transcripts.tsv`, `transcripts.jsonl`, or
the folder's one `.jsonl`), or the list file itself. An audio file listed twice is an error.
Each file is mixed down to mono, resampled to the model's rate (Config `sample_rate`, else Whisper's 16 kHz)
with a band-limited (FFT) resampler and zero-padded to `samples`; a longer file is an error, never cut.
Transcripts are tokenised with a byte-level BPE trained on the train split (the model's vocab), framed as
<|startoftranscript|> text <|endoftext|> and padded with <|endoftext|> to the longest transcript of the data;
the model's loss counts every position, padding included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

if __package__:
    from . import data
else:  # beside data.py in the model's folder
    import data  # type: ignore[no-redef]

__all__ = ["load_audio", "prepare_audio", "read_transcripts", "resample"]

LISTS = ("transcripts.tsv", "transcripts.jsonl")
BOS, EOS = "<|startoftranscript|>", data.EOS
DEFAULT_RATE = 16_000


def read_transcripts(path: Path) -> dict[str, tuple[Path, str]]:
    """{item id: (audio file, transcript)} from a transcripts.tsv / .jsonl, or a folder holding one."""
    if path.is_dir():
        found = [path / n for n in LISTS if (path / n).is_file()]
        others = sorted(path.glob("*.jsonl"))
        found = found or (others if len(others) == 1 else [])
        if not found:
            raise data.DataError(f"{path}: no {' or '.join(LISTS)}; expected a list of audio files and their transcripts")
        path = found[0]
    base = path.parent
    text = data.read_utf8(path)
    rows: list[tuple[int, str, str]] = []  # (line, audio file name, transcript)
    if path.suffix == ".jsonl":
        for k, row in data.jsonl_rows(path, text, '{"audio": ..., "text": ...}'):
            name = row.get("audio", row.get("path")) if isinstance(row, dict) else None
            if not isinstance(name, str) or not isinstance(row.get("text"), str):
                raise data.DataError(f"{path}:{k}: expected an object with string fields `audio` (or `path`) and "
                                     "`text`")
            rows.append((k, name, row["text"]))
    else:
        for k, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                name, tab, transcript = line.partition("\t")
                if not tab:
                    raise data.DataError(f"{path}:{k}: no tab; expected `path<TAB>transcript`")
                rows.append((k, name, transcript))
    items: dict[str, tuple[Path, str]] = {}
    first: dict[str, int] = {}
    for k, name, transcript in rows:
        file = base / name
        if not file.is_file():
            raise data.DataError(f"{path}:{k}: audio file `{name}` not found (relative to {base})")
        if not transcript.strip():
            raise data.DataError(f"{path}:{k}: empty transcript for `{name}`")
        if name in first:
            raise data.DataError(f"{path}:{k}: audio file `{name}` is listed twice (first on line {first[name]}); "
                                 "expected one transcript per file")
        first[name] = k
        items[f"{path.name}:{name}"] = (file, transcript.strip())
    if not items:
        raise data.DataError(f"{path}: no rows; expected one audio file and transcript per line")
    return items


def resample(x: torch.Tensor, rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling of a 1-D signal: its spectrum cut (or zero-extended) to the new Nyquist rate."""
    if rate == new_rate:
        return x
    n = x.shape[-1]
    m = max(1, round(n * new_rate / rate))
    spec = torch.fft.rfft(x.double())
    keep = min(spec.shape[-1], m // 2 + 1)
    out = torch.zeros(m // 2 + 1, dtype=spec.dtype)
    out[:keep] = spec[:keep]
    return (torch.fft.irfft(out, n=m) * (m / n)).float()


def load_audio(path: Path, rate: int, samples: int) -> torch.Tensor:
    """One file as (samples,) float32 at `rate`, mono, zero-padded; an unreadable or too long file is an error."""
    import soundfile

    try:
        wave, file_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as e:
        raise data.DataError(f"{path}: not a readable audio file ({str(e).splitlines()[0]}); expected WAV or FLAC") from None
    x = resample(torch.from_numpy(wave).mean(1), int(file_rate), rate)
    if len(x) > samples:
        raise data.DataError(f"{path}: {len(x) / rate:.2f} s at {rate} Hz, longer than the model's {samples} samples "
                    f"({samples / rate:.2f} s); split the file or build the model with --set samples=N")
    return torch.nn.functional.pad(x, (0, samples - len(x)))


def prepare_audio(opts: data.DataOptions, form: data.Form, run_dir: Path, state: dict[str, Any] | None, model: Any,
                  write: bool) -> data.Splits:
    """{"audio": (n, samples), "target": (n, T)} per split, and data.json's record."""
    root, cfg = Path(opts.source), form.config
    rate, samples, context = int(cfg.get("sample_rate", DEFAULT_RATE)), int(cfg["samples"]), int(cfg["context"])
    parts = data.explicit_parts(root)
    sources = {s: read_transcripts(p) for s, p in parts.items()} if parts else {"all": read_transcripts(root)}
    items, record = data.make_split(sources, opts.seed, str(root), state.get("split") if state else None)
    tok = data.train_tokenizer([t for _, t in items["train"].values()], int(cfg["vocab"]), None,
                               run_dir / "tokenizer.json", state is not None, write, str(root), specials=(EOS, BOS),
                               prefix_space=True)
    bos, eos = tok.token_to_id(BOS), tok.token_to_id(EOS)
    ids = {s: {i: [bos, *tok.encode(t).ids, eos] for i, (_, t) in items[s].items()} for s in items}
    longest = max(len(v) for part in ids.values() for v in part.values())
    if state and "target_length" in state:
        longest = state["target_length"]
    for part in ids.values():
        for i, v in part.items():
            if len(v) > min(context + 1, longest):
                file, name = i.split(":", 1)
                raise data.DataError(f"{file}: the transcript of `{name}` is {len(v)} tokens with its start and end, more than "
                            f"the model's context + 1 = {context + 1} (or the run's {longest})")
    tensors = {}
    for s in data.SPLITS:
        audio = [load_audio(f, rate, samples) for f, _ in items[s].values()]
        target = [v + [eos] * (longest - len(v)) for v in ids[s].values()]
        tensors[s] = {"audio": torch.stack(audio), "target": torch.tensor(target, dtype=torch.long)}
    info = {
        "kind": form.kind,
        "split": record,
        "tokenizer": "tokenizer.json",
        "sample_rate": rate,
        "samples": samples,
        "target_length": longest,
        "items": {s: len(items[s]) for s in data.SPLITS},
    }
    return data.Splits.of_tensors(tensors, info)
