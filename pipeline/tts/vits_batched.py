"""Batched multi-speaker VITS synthesis in plain torch, each item as it would sound alone.

coqui's `Vits.inference` takes a padded batch with `x_lengths`, but (1) it draws the prior's noise for the
whole batch from the global RNG, so an item's audio depends on its neighbours, and (2) its HiFi-GAN
decoder reads the padding past a short item's end. This walk follows `Vits.inference` step by step with
the model's own modules and fixes both: the text encoder and the flow run on the batch (they mask by
length at every layer), the duration predictor runs per item under the item's seed (the stochastic one
draws its noise inside the module; it is small next to the flow and the decoder), the prior's noise
comes from a `torch.Generator` per item (on the CPU, so the same on any device), and the decoder is the
masked batched HiFi-GAN (pipeline/tts/hifigan_batched.py).
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.tts import hifigan_batched


def _noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(int(seed) + 1))


@torch.inference_mode()
def synthesize(model, token_ids: list[list[int]], speaker_rows: list[int | None], language_ids: list[int | None],
               seeds: list[int]) -> list[np.ndarray]:
    """Waveforms (float32) of a batch for a coqui `Vits` model: token ids per item, speaker table rows (all
    None for a single-speaker model), language ids (all None without a language table) and seeds."""
    from TTS.tts.utils.helpers import generate_path, sequence_mask

    device = next(model.parameters()).device
    n = len(token_ids)
    lengths = torch.tensor([len(t) for t in token_ids], device=device)
    x = torch.zeros(n, int(lengths.max()), dtype=torch.long, device=device)
    for row, ids in enumerate(token_ids):
        x[row, :len(ids)] = torch.as_tensor(ids, device=device)
    aux = {"x_lengths": lengths, "speaker_ids": None, "d_vectors": None, "language_ids": None}
    if any(r is not None for r in speaker_rows):
        aux["speaker_ids"] = torch.tensor(speaker_rows, device=device)
    if any(lid is not None for lid in language_ids):
        aux["language_ids"] = torch.tensor(language_ids, device=device)
    g = model._get_speaker_conditioning(aux, "emb_g", normalize_embedding=False)  # as Vits.inference
    lang_emb = None
    if model.args.use_language_embedding and aux["language_ids"] is not None:
        lang_emb = model.emb_l(aux["language_ids"]).unsqueeze(-1)
    h, m_p, logs_p, x_mask = model.text_encoder(x, lengths, lang_emb=lang_emb)

    logw = torch.zeros_like(x_mask)
    dp_g = g if model.args.condition_dp_on_speaker else None
    for row in range(n):
        end = int(lengths[row])
        part = {"x": h[row:row + 1, :, :end], "x_mask": x_mask[row:row + 1, :, :end],
                "g": None if dp_g is None else dp_g[row:row + 1],
                "lang_emb": None if lang_emb is None else lang_emb[row:row + 1]}
        if model.args.use_sdp:  # draws torch.randn inside the module, from the CPU's global RNG
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seeds[row]))
                logw[row:row + 1, :, :end] = model.duration_predictor(
                    part["x"], part["x_mask"], g=part["g"], reverse=True, noise_scale=model.inference_noise_scale_dp,
                    lang_emb=part["lang_emb"])
        else:
            logw[row:row + 1, :, :end] = model.duration_predictor(part["x"], part["x_mask"], g=part["g"],
                                                                  lang_emb=part["lang_emb"])
    w = torch.exp(logw) * x_mask * model.length_scale
    w_ceil = torch.ceil(w)
    y_lengths = torch.clamp_min(torch.sum(w_ceil, [1, 2]), 1).long()
    y_mask = sequence_mask(y_lengths, None).to(x_mask.dtype).unsqueeze(1)
    attn_mask = x_mask * y_mask.transpose(1, 2)
    attn = generate_path(w_ceil.squeeze(1), attn_mask.squeeze(1).transpose(1, 2))
    m_p = torch.matmul(attn.transpose(1, 2), m_p.transpose(1, 2)).transpose(1, 2)
    logs_p = torch.matmul(attn.transpose(1, 2), logs_p.transpose(1, 2)).transpose(1, 2)

    noise = torch.zeros_like(m_p)
    for row in range(n):
        frames = int(y_lengths[row])
        noise[row, :, :frames] = _noise(seeds[row], (m_p.shape[1], frames)).to(device=device, dtype=m_p.dtype)
    z_p = (m_p + noise * torch.exp(logs_p) * model.inference_noise_scale) * y_mask
    z = model.flow(z_p, y_mask, g=g, reverse=True)
    z, _, _, y_mask = model.upsampling_z(z, y_lengths=y_lengths, y_mask=y_mask)
    frames = y_mask.sum(dim=(1, 2)).long()
    if model.max_inference_len:
        z, frames = z[:, :, :model.max_inference_len], frames.clamp(max=model.max_inference_len)
    wav = hifigan_batched.generate(model.waveform_decoder, z, frames, g).float().cpu().numpy()
    hop = hifigan_batched.hop_length(model.waveform_decoder)
    return [wav[row, 0, :int(frames[row]) * hop].copy() for row in range(n)]


def synthesize_batch(backend, requests, max_batch: int = 16) -> list:
    """Speak `requests` (pipeline.tts.base.SynthesisRequest) with a VitsBackend in length-sorted batches of at
    most `max_batch`; one (samples, rate) or Exception per request. A batch that fails as a whole (out of
    memory, say) is retried item by item, so only the items that fail alone fail."""
    from pipeline.tts.base import length_batches

    results: list = [None] * len(requests)
    prepared = []  # (request index, ids, speaker row, language id, seed)
    for index, request in enumerate(requests):
        try:
            row = backend.speaker_row(request.speaker)
            ids = backend.model.tokenizer.text_to_ids(request.text)
            if not ids:
                raise ValueError(f"no character of {request.text[:40]!r} is in the model's alphabet")
            prepared.append((index, ids, row, backend.language_id(request.language), int(request.seed)))
        except Exception as exc:  # noqa: BLE001 - this request fails alone
            results[index] = exc
    # items with and without a language id cannot share a batch tensor
    for has_language in (False, True):
        subset = [p for p in prepared if (p[3] is not None) == has_language]
        for group in length_batches([len(p[1]) for p in subset], max_batch):
            items = [subset[i] for i in group]
            try:
                wavs = synthesize(backend.model, [p[1] for p in items], [p[2] for p in items], [p[3] for p in items],
                                  [p[4] for p in items])
            except Exception:  # noqa: BLE001 - retried alone below
                wavs = []
                for p in items:
                    try:
                        wavs += synthesize(backend.model, [p[1]], [p[2]], [p[3]], [p[4]])
                    except Exception as exc:  # noqa: BLE001
                        wavs.append(exc)
            for p, wav in zip(items, wavs):
                results[p[0]] = wav if isinstance(wav, Exception) else (wav, backend.sample_rate)
    return results
