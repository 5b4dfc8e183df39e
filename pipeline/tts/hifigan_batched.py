"""Coqui's HiFi-GAN generator over a padded batch, masked so that each item gets the waveform it would get alone.

Plain zero padding is not enough: a convolution near the end of a short item reads the padded frames,
which after the first layer hold biases and the speaker conditioning, not zeros, so the short item's last
few hundred milliseconds would depend on its neighbours. Here every convolution's output is multiplied by
the item's valid-length mask, so each convolution reads zeros past an item's end, exactly what the
convolution's own zero padding gives the item alone. Transposed convolutions of stride s map n frames to
s*n frames for the kernel/padding pairs HiFi-GAN uses ((k - s) even), so the lengths stay exact. Used by
the XTTS-v2 decoder (HifiDecoder.waveform_decoder) and by VITS (Vits.waveform_decoder); both are
`TTS.vocoder.models.hifigan_generator.HifiganGenerator`, walked here module by module with their own weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LRELU_SLOPE = 0.1  # the slope coqui's generator uses inside its blocks (its last activation uses torch's 0.01)


def length_mask(lengths: torch.Tensor, frames: int, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, frames] with 1 where a frame is inside its item and 0 in the padding."""
    return (torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]).to(dtype).unsqueeze(1)


def _upsampled_lengths(conv: torch.nn.ConvTranspose1d, lengths: torch.Tensor) -> torch.Tensor:
    (k,), (s,), (p,) = conv.kernel_size, conv.stride, conv.padding
    (op,), (d,) = conv.output_padding, conv.dilation
    return (lengths - 1) * s - 2 * p + d * (k - 1) + op + 1


def _resblock(block, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if hasattr(block, "convs1"):  # ResBlock1: two convolutions per dilation
        for c1, c2 in zip(block.convs1, block.convs2):
            xt = c1(F.leaky_relu(x, LRELU_SLOPE)) * mask
            xt = c2(F.leaky_relu(xt, LRELU_SLOPE)) * mask
            x = xt + x
        return x
    for c in block.convs:  # ResBlock2
        x = c(F.leaky_relu(x, LRELU_SLOPE)) * mask + x
    return x


def check_supported(generator) -> None:
    """Raise if `generator` has a part this walk does not reproduce (a newer coqui-tts might add one)."""
    if hasattr(generator, "lin_pre"):
        raise NotImplementedError("HiFi-GAN generators with lin_pre are not supported by the batched decoder")
    for conv in generator.ups:
        (k,), (s,), (p,) = conv.kernel_size, conv.stride, conv.padding
        if k - s != 2 * p:
            raise NotImplementedError(f"transposed convolution k={k} s={s} p={p} does not keep lengths exact")


def generate(generator, x: torch.Tensor, lengths: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
    """Waveforms [B, 1, T*hop] of a padded batch x [B, C, T] whose item b has lengths[b] frames; samples past
    an item's end are zero. `g` is the per-item conditioning [B, cond_channels, 1] (or None)."""
    mask = length_mask(lengths, x.shape[-1], x.dtype)
    o = generator.conv_pre(x * mask)
    if hasattr(generator, "cond_layer"):
        o = o + generator.cond_layer(g)
    o = o * mask
    for i, up in enumerate(generator.ups):
        o = up(F.leaky_relu(o, LRELU_SLOPE))
        lengths = _upsampled_lengths(up, lengths)
        mask = length_mask(lengths, o.shape[-1], o.dtype)
        if generator.cond_in_each_up_layer:
            o = o + generator.conds[i](g)
        o = o * mask
        z_sum = None
        for j in range(generator.num_kernels):
            z = _resblock(generator.resblocks[i * generator.num_kernels + j], o, mask)
            z_sum = z if z_sum is None else z_sum + z
        o = z_sum / generator.num_kernels
    o = generator.conv_post(F.leaky_relu(o))  # coqui uses torch's default slope here
    return torch.tanh(o) * mask


def hop_length(generator) -> int:
    """Output samples per input frame."""
    hop = 1
    for conv in generator.ups:
        hop *= conv.stride[0]
    return hop
