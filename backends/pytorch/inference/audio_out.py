"""Audio out of a codec language model (MusicGen): the codec frames that the compiled model generates, decoded to a
waveform by an EnCodec checkpoint in transformers' layout (`--codec PATH`: a folder with config.json and the weights,
as EncodecModel.save_pretrained writes it, e.g. facebook/encodec_32khz), and written as WAV with soundfile.

    python predict.py --weights musicgen/ --codec encodec_32khz/ --max-new-tokens 250 -o music/

Copied verbatim next to a generated model.py with tasks.py; depends on torch, and on transformers (EncodecModel) and
soundfile only when --codec is given. No MetaGen import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING or (__package__ or "").rsplit(".", 1)[-1] == "inference":  # the compiler's package
    from .inputs import PredictError
else:  # beside model.py in the output folder
    from inputs import PredictError  # type: ignore[no-redef]

__all__ = ["Codec", "load_codec", "write_wav"]


class Codec:
    """An EnCodec decoder: codes (K codebooks, frames) -> waveform (channels, frames x hop) at `sample_rate`."""

    def __init__(self, model: Any, path: Path):
        self.model, self.path = model.eval(), path
        config = model.config
        self.sample_rate = int(config.sampling_rate)
        self.channels = int(config.audio_channels)
        self.hop = 1
        for r in config.upsampling_ratios:
            self.hop *= int(r)
        self.codebook_size = int(config.codebook_size)
        self.codebooks = int(getattr(config, "num_quantizers", 0) or 0)  # at the largest target bandwidth

    def check(self, codebooks: int, entries: int | None) -> None:
        """PredictError unless the codec decodes the model's `codebooks` codebooks of `entries` entries each."""
        if self.codebooks and codebooks > self.codebooks:
            raise PredictError(f"{self.path}: the codec decodes at most {self.codebooks} codebooks; the model writes "
                               f"{codebooks}: the codec does not match the model")
        if entries is not None and entries != self.codebook_size:
            raise PredictError(f"{self.path}: the codec's codebooks hold {self.codebook_size} entries, the model's "
                               f"{entries}: the codec does not match the model")

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(K, frames) int64 codes -> (channels, frames x hop) float32 in [-1, 1] (EnCodec's output, clamped)."""
        if codes.dim() != 2:
            raise PredictError(f"codec codes must be (codebooks, frames), got {tuple(codes.shape)}")
        self.check(int(codes.shape[0]), None)
        if codes.numel() and not 0 <= int(codes.min()) <= int(codes.max()) < self.codebook_size:
            raise PredictError(f"{self.path}: the codec's codebooks hold {self.codebook_size} entries; the codes run "
                               f"from {int(codes.min())} to {int(codes.max())}: the codec does not match the model")
        device = next(self.model.parameters()).device
        frames = codes[None, None].to(device)  # (chunks 1, batch 1, K, frames)
        try:
            audio = self.model.decode(frames, [None], return_dict=False)[0]  # (1, channels, samples)
        except (RuntimeError, IndexError, ValueError) as e:
            raise PredictError(f"{self.path}: EnCodec could not decode {codes.shape[0]} codebooks "
                               f"({str(e).splitlines()[0] if str(e) else e.__class__.__name__})") from None
        return audio[0, :, : codes.shape[-1] * self.hop].float().clamp(-1.0, 1.0).cpu()


def load_codec(path: str | Path, device: torch.device | str = "cpu") -> Codec:
    """The EnCodec model saved in `path` (transformers' EncodecModel.save_pretrained layout)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise PredictError(f"{path}: no EnCodec checkpoint (expected a folder with config.json and the weights, as "
                           "transformers' EncodecModel.save_pretrained writes it)")
    try:
        from transformers import EncodecModel
        from transformers.utils import logging
    except ImportError:
        raise PredictError("--codec decodes with transformers' EncodecModel: pip install transformers") from None
    bar = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()  # no "Loading weights" bar on stderr, where predict.py's errors go
    try:
        model: Any = EncodecModel.from_pretrained(str(path))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PredictError(f"{path}: not a readable EnCodec checkpoint ({str(e).splitlines()[0]})") from None
    finally:
        if bar:
            logging.enable_progress_bar()
    return Codec(model.to(device), path)


def write_wav(path: Path, waveform: torch.Tensor, rate: int) -> Path:
    """(channels, samples) float32 as a 16-bit PCM WAV file at `rate`."""
    try:
        import soundfile
    except ImportError:
        raise PredictError("writing WAV files needs soundfile: pip install soundfile") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), waveform.t().numpy(), rate, subtype="PCM_16")
    return path
