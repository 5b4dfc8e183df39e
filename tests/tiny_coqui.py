"""Tiny randomly initialised Coqui models, built offline and saved in the format the backends load.

Real Coqui classes (Vits, Xtts and their tokenizers, HiFi-GAN decoders, speaker encoder) at toy sizes:
synthesis takes milliseconds and the audio is noise, which is all the pipeline's code paths need.
Used by tests/tts/test_coqui.py and bench/tts_bench.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

TINY_VITS_ARGS = {"hidden_channels": 8, "hidden_channels_ffn_text_encoder": 16, "num_heads_text_encoder": 2,
                      "num_layers_text_encoder": 1, "num_layers_posterior_encoder": 1, "num_layers_flow": 1,
                      "upsample_initial_channel_decoder": 16, "resblock_kernel_sizes_decoder": [3],
                      "resblock_dilation_sizes_decoder": [[1, 3, 5]], "speaker_embedding_channels": 8, "use_sdp": False,
                      "length_scale": 0.5}


def build_tiny_vits(folder: Path, num_speakers: int = 2000, seed: int = 0, full_size: bool = False) -> Path:
    """A multi-speaker VITS with `num_speakers` rows (names spk0..spkN-1) and a plain-letters alphabet.
    full_size=True keeps coqui's standard VITS dimensions (the VCTK/LibriTTS recipes'), for benchmarks that
    need the real architecture's cost per second of audio."""
    import torch
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits, VitsArgs

    sizes = {} if full_size else TINY_VITS_ARGS
    args = VitsArgs(**sizes, use_speaker_embedding=True, init_discriminator=False)
    chars = CharactersConfig(characters_class="TTS.tts.models.vits.VitsCharacters", pad="<PAD>", eos="<EOS>",
                             bos="<BOS>", blank="<BLNK>", phonemes=None, punctuations="!'(),-.:;? ",
                             characters="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    cfg = VitsConfig(model_args=args, characters=chars, use_phonemes=False, text_cleaner="basic_cleaners",
                     add_blank=True, speakers=[f"spk{i}" for i in range(num_speakers)])
    torch.manual_seed(seed)
    model = Vits(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "config": cfg.to_dict()}, folder / "model.pth")
    cfg.save_json(str(folder / "config.json"))
    return folder


def build_tiny_xtts(folder: Path, seed: int = 0, full_size: bool = False, max_audio_tokens: int = 24,
                    spread: float | None = None, stop_bias: float = 0.0) -> Path:
    """An XTTS-v2 with a 1-layer, 32-wide GPT, the BPE vocab coqui-tts ships, a perceiver conditioning
    encoder, and the real (randomly initialised) HiFi-GAN decoder and ResNet speaker encoder. At most
    `max_audio_tokens` - 3 audio codes per piece (21 by default), so a random GPT that never says stop
    still ends quickly.
    GPT-2's initialisation (std 0.02) makes a toy GPT say nearly the same codes whatever the text and voice;
    `spread` re-draws the GPT's weights with that std (layer-norm gains near 1), so codes depend on both and
    batching bugs show. `stop_bias` is added to the stop token's logit: above 0 some pieces stop early
    (which ones depends on text, voice and seed), as a trained model does.
    full_size=True builds XTTS-v2's own shapes (30-layer, 1024-wide GPT, 1026 audio codes, up to 602 per
    piece) with random weights: the real model's compute per audio code, for benchmarks."""
    import torch
    import TTS
    from TTS.tts.configs.xtts_config import XttsArgs, XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    vocab = Path(TTS.__file__).parent / "tts/utils/assets/tortoise/tokenizer.json"
    shape = ({"gpt_num_audio_tokens": 1026, "gpt_start_audio_token": 1024, "gpt_stop_audio_token": 1025} if full_size else
             {"gpt_layers": 1, "gpt_n_model_channels": 32, "gpt_n_heads": 2, "decoder_input_dim": 32,
              "gpt_max_audio_tokens": max_audio_tokens, "gpt_num_audio_tokens": 66, "gpt_start_audio_token": 64,
              "gpt_stop_audio_token": 65})
    args = XttsArgs(**shape, gpt_use_perceiver_resampler=True)
    cfg = XttsConfig(model_args=args)
    torch.manual_seed(seed)
    model = Xtts(cfg)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(vocab))
    model.init_models()  # the GPT's text vocabulary comes from the tokenizer
    if spread is not None:
        with torch.no_grad():
            for name, p in model.gpt.named_parameters():
                if name.startswith(("gpt.", "text_", "mel_", "final_norm")):
                    gain = p.ndim == 1 and name.endswith("weight")  # layer-norm gains
                    p.copy_(1 + 0.1 * torch.randn_like(p) if gain else spread * torch.randn_like(p))
    if stop_bias:
        with torch.no_grad():
            model.gpt.mel_head.bias[model.gpt.stop_audio_token] += stop_bias
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()), encoding="utf-8")
    shutil.copy(vocab, folder / "vocab.json")
    return folder


def write_clip(path: Path, seed: int, seconds: float = 3.0, rate: int = 22050) -> Path:
    """A voiced-sounding reference clip: a few harmonics with a seeded pitch, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 90 + 120 * rng.random()
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * 0.2 + 0.01 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), rate)
    return path
