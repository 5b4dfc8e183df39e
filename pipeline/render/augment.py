"""User-side acoustic realism: a room, noise, a telephone line or a lossy codec, and a level change.

Applied to user audio only, at 16 kHz, in this order (each with its configured probability):

1. reverb: a shoebox room simulated with pyroomacoustics (image sources; the wall absorption and reflection
   order come from Sabine's formula for an RT60 drawn from the config), the direct path kept at time zero.
   audiomentations' RoomSimulator builds a general polyhedral room, whose image-source count grows
   exponentially with the order (minutes per room at RT60 0.4 s): the shoebox computes the same room in ~1 s.
2. noise at a drawn SNR (RMS over the clip, audiomentations' definition): coloured noise (AddColorNoise), babble
   of 3-6 other voices, or the user's noise recordings (AddBackgroundNoise).
3. channel: a telephone line (300 Hz high-pass, band-limited to an 8 kHz sample rate, G.711 mu-law or GSM through
   FFmpeg) or a lossy wideband codec (Opus, MP3 through FFmpeg), realigned to the input by cross-correlation.
4. level change (Gain), capped so the peak stays under full scale.

Every draw comes from one numpy RNG seeded per sample; audiomentations' own draws run under `seeded_globals`.
The returned recipe (seed, kinds, SNR, RT60, room, codec, gain) is what the sample JSON records.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio import resample
from pipeline.config import AugmentConfig
from pipeline.render.seeding import seeded_globals

RATE = 16000
TELEPHONE_RATE = 8000
TELEPHONE_HIGHPASS_HZ = 300.0
PEAK = 0.99
NOISE_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")
# FFmpeg encoder arguments and container per codec
_CODECS = {
    "mulaw": (["-c:a", "pcm_mulaw"], "wav"),
    "gsm": (["-c:a", "libgsm"], "gsm"),
    "opus": (["-c:a", "libopus", "-application", "voip"], "ogg"),
    "mp3": (["-c:a", "libmp3lame"], "mp3"),
}


class AugmentError(RuntimeError):
    """Augmentation cannot run as configured (FFmpeg missing, an unreadable noise folder); the message says the fix."""


@dataclass(frozen=True)
class BabbleClip:
    """Speech of one pool voice (16 kHz mono), an ingredient of babble noise."""

    speaker_id: str
    samples: np.ndarray


def ffmpeg_path() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise AugmentError("augment.telephone_prob / augment.codec_prob need FFmpeg on PATH "
                           "(Debian/Ubuntu: apt-get install ffmpeg), or set both to 0")
    return path


def noise_files(noise_dir: Path) -> list[Path]:
    if not noise_dir.is_dir():
        raise AugmentError(f"augment.noise_dir {noise_dir} is not a folder")
    files = sorted(p for p in noise_dir.rglob("*") if p.suffix.lower() in NOISE_EXTENSIONS and p.is_file())
    if not files:
        raise AugmentError(f"augment.noise_dir {noise_dir} holds no {'/'.join(NOISE_EXTENSIONS)} files")
    return files


def ffmpeg_roundtrip(samples: np.ndarray, rate: int, codec: str, bitrate_kbps: int | None = None) -> np.ndarray:
    """Encode mono float audio with FFmpeg and decode it back at the same rate, aligned and of the same length."""
    encode_args, container = _CODECS[codec]
    if bitrate_kbps is not None:
        encode_args = [*encode_args, "-b:a", f"{bitrate_kbps}k"]
    ffmpeg = ffmpeg_path()
    common = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error"]
    pcm = ["-f", "f32le", "-ar", str(rate), "-ac", "1"]
    x = np.ascontiguousarray(samples, dtype="<f4")
    try:
        coded = subprocess.run([*common, *pcm, "-i", "pipe:0", *encode_args, "-f", container, "pipe:1"],
                               input=x.tobytes(), capture_output=True, check=True, timeout=120).stdout
        decoded = subprocess.run([*common, "-f", container, "-i", "pipe:0", *pcm, "pipe:1"],
                                 input=coded, capture_output=True, check=True, timeout=120).stdout
    except subprocess.CalledProcessError as exc:
        raise AugmentError(f"FFmpeg {codec} round trip failed: {exc.stderr.decode(errors='replace')[-500:]}") from None
    return _aligned(np.frombuffer(decoded, dtype="<f4").astype(np.float32), x, rate)


def _aligned(y: np.ndarray, x: np.ndarray, rate: int, max_lag_s: float = 0.1) -> np.ndarray:
    """`y` shifted by the codec's delay (the cross-correlation peak within max_lag_s) and cut/padded to len(x)."""
    n = len(x)
    if y.size == 0:
        return np.zeros(n, dtype=np.float32)
    size = 1 << int(np.ceil(np.log2(len(x) + len(y))))
    corr = np.fft.irfft(np.fft.rfft(y, size) * np.conj(np.fft.rfft(x, size)), size)
    max_lag = int(max_lag_s * rate)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    lag = int(lags[np.argmax(np.concatenate([corr[:max_lag + 1], corr[-max_lag:]]))])
    y = y[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag, dtype=np.float32), y])
    return np.pad(y[:n], (0, max(0, n - len(y)))).astype(np.float32)


def room_impulse_response(room: dict[str, Any]) -> np.ndarray:
    """The RIR of a recorded room (recipe["room"]), at 16 kHz, starting at its direct path."""
    import pyroomacoustics as pra

    shoebox = pra.ShoeBox(room["dims_m"], fs=RATE, materials=pra.Material(room["absorption"]),
                          max_order=room["max_order"], air_absorption=False)
    shoebox.add_source(room["source_m"])
    shoebox.add_microphone(room["mic_m"])
    shoebox.compute_rir()
    rir = np.asarray(shoebox.rir[0][0], dtype=np.float64)
    return rir[int(np.argmax(np.abs(rir))):]


def schroeder_rt60(rir: np.ndarray, rate: int) -> float:
    """RT60 by Schroeder backward integration of an impulse response (pyroomacoustics, the T30 line)."""
    import pyroomacoustics as pra

    return float(pra.experimental.measure_rt60(rir, fs=rate, decay_db=30))


class UserAugmenter:
    """Draws and applies one augmentation recipe per clip. Build once per worker; call per user turn."""

    def __init__(self, cfg: AugmentConfig, babble: Sequence[BabbleClip] = (), noise_dir: Path | None = None):
        self.cfg = cfg
        self.babble = [c for c in babble if c.samples.size > 0]
        self.noise_dir = noise_dir
        self.noise_paths = noise_files(noise_dir) if noise_dir is not None else []
        self._background = None
        if cfg.telephone_prob > 0 or cfg.codec_prob > 0:
            ffmpeg_path()  # fail at build time, not on the first phone call

    def augment(self, samples: np.ndarray, sample_rate: int, seed: int,
                speaker_id: str = "") -> tuple[np.ndarray, dict[str, Any]]:
        """16 kHz augmented audio of the same length, and its recipe. `speaker_id` keeps the user's own voice out
        of the babble when the pool has others."""
        cfg = self.cfg
        rng = np.random.default_rng(seed)
        x = resample(samples, sample_rate, RATE).astype(np.float32)
        u_reverb, u_noise, u_channel, u_gain = rng.random(4)  # one draw per step, taken or not: steps stay independent
        recipe: dict[str, Any] = {"seed": int(seed), "kinds": []}
        if x.size == 0:
            return x, recipe
        if u_reverb < cfg.reverb_prob:
            x, recipe["room"] = self._reverb(x, rng)
            recipe["rt60_s"] = recipe["room"]["rt60_s"]
            recipe["kinds"].append("reverb")
        kinds = self._noise_kinds(speaker_id)
        if u_noise < cfg.noise_prob and kinds:
            x, recipe["noise"] = self._noise(x, rng, kinds, speaker_id)
            recipe["snr_db"] = recipe["noise"]["snr_db"]
            recipe["kinds"].append("noise")
        if u_channel < cfg.telephone_prob:
            x, recipe["channel"] = self._telephone(x, rng)
            recipe["codec"] = recipe["channel"]["codec"]
            recipe["kinds"].append("telephone")
        elif u_channel < cfg.telephone_prob + cfg.codec_prob:
            x, recipe["channel"] = self._codec(x, rng)
            recipe["codec"] = recipe["channel"]["codec"]
            recipe["kinds"].append("codec")
        if u_gain < cfg.gain_prob:
            x, recipe["gain_db"] = self._gain(x, rng)
            recipe["kinds"].append("gain")
        peak = float(np.max(np.abs(x)))
        if peak > PEAK:  # loud noise or a room can push past full scale: scale down rather than clip
            x = x * (PEAK / peak)
            recipe["limit_db"] = round(float(20 * np.log10(PEAK / peak)), 3)
        return x.astype(np.float32), recipe

    # --- steps -----------------------------------------------------------------------------------
    def _reverb(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        import pyroomacoustics as pra
        from scipy.signal import fftconvolve

        cfg = self.cfg
        dims = [float(rng.uniform(lo, hi)) for lo, hi in zip(cfg.room_min_m, cfg.room_max_m)]
        rt60 = float(rng.uniform(cfg.rt60_min_s, cfg.rt60_max_s))
        margin = 0.3
        source = [float(rng.uniform(margin, d - margin)) for d in dims[:2]] + [float(rng.uniform(1.2, min(1.8, dims[2] - margin)))]
        distance = float(rng.uniform(cfg.mic_distance_min_m, cfg.mic_distance_max_m))
        angle = float(rng.uniform(0, 2 * np.pi))
        mic = [float(np.clip(source[0] + distance * np.cos(angle), margin, dims[0] - margin)),
               float(np.clip(source[1] + distance * np.sin(angle), margin, dims[1] - margin)),
               float(np.clip(source[2] - 0.3, margin, dims[2] - margin))]
        room: dict[str, Any] = {"dims_m": [round(d, 4) for d in dims], "rt60_s": round(rt60, 4),
                                "source_m": [round(v, 4) for v in source], "mic_m": [round(v, 4) for v in mic]}
        # Sabine's formula misses the image-source room's decay by up to ~20 % (more at long RT60): the absorption
        # is corrected from the measured decay (at most twice) until the room's RT60 is within 5 % of the draw
        design = rt60
        for _ in range(3):
            absorption, max_order = pra.inverse_sabine(design, dims)
            room.update(absorption=round(float(absorption), 6), max_order=int(max_order))
            rir = room_impulse_response(room)
            measured = schroeder_rt60(rir, RATE)
            if abs(measured / rt60 - 1) <= 0.05:
                break
            design *= rt60 / measured
        room["rt60_measured_s"] = round(measured, 4)
        wet = fftconvolve(x, rir)[:x.size]
        return wet.astype(np.float32), room

    def _noise_kinds(self, speaker_id: str) -> dict[str, float]:
        available = {"colored": True, "babble": bool(self.babble), "clips": bool(self.noise_paths)}
        return {k: w for k, w in self.cfg.noise_kinds.items() if w > 0 and available[k]}

    def _noise(self, x: np.ndarray, rng: np.random.Generator, kinds: dict[str, float],
               speaker_id: str) -> tuple[np.ndarray, dict[str, Any]]:
        from audiomentations import AddBackgroundNoise, AddColorNoise

        cfg = self.cfg
        names = sorted(kinds)
        weights = np.array([kinds[k] for k in names], dtype=float)
        kind = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        snr = float(rng.uniform(cfg.snr_min_db, cfg.snr_max_db))
        library_seed = int(rng.integers(2**31))
        noise: dict[str, Any] = {"kind": kind, "snr_db": round(snr, 3)}
        if kind == "colored":
            decay = float(rng.uniform(cfg.colored_decay_min_db, cfg.colored_decay_max_db))
            noise["decay_db_per_octave"] = round(decay, 3)
            transform = AddColorNoise(min_snr_db=snr, max_snr_db=snr, min_f_decay=decay, max_f_decay=decay, p=1.0)
            with seeded_globals(library_seed):
                return transform(x, RATE), noise
        if kind == "clips":
            if self._background is None:
                self._background = AddBackgroundNoise(sounds_path=self.noise_paths, min_snr_db=cfg.snr_min_db,
                                                      max_snr_db=cfg.snr_max_db, p=1.0)
            self._background.min_snr_db = self._background.max_snr_db = snr
            with seeded_globals(library_seed):
                y = self._background(x, RATE)
            chosen = Path(self._background.parameters["noise_file_path"])
            noise["file"] = str(chosen.relative_to(self.noise_dir)) if self.noise_dir else chosen.name
            noise["offset_s"] = round(float(self._background.parameters.get("offset", 0.0)), 3)
            return y, noise
        babble, talkers = self._babble(x.size, rng, speaker_id)
        noise["talkers"] = talkers
        return _mix_at_snr(x, babble, snr), noise

    def _babble(self, n: int, rng: np.random.Generator, speaker_id: str) -> tuple[np.ndarray, list[str]]:
        """Several talkers at once, each a stream of pool clips from a random point; other voices than the
        user's when the pool has them (a one-voice pool babbles in that voice)."""
        cfg = self.cfg
        others = [c for c in self.babble if c.speaker_id != speaker_id] or self.babble
        count = int(rng.integers(cfg.babble_talkers_min, cfg.babble_talkers_max + 1))
        mix = np.zeros(n, dtype=np.float64)
        talkers = []
        for _ in range(count):
            clip = others[int(rng.integers(len(others)))]
            talkers.append(clip.speaker_id)
            stream = [clip.samples[int(rng.integers(len(clip.samples))):]]  # each talker starts mid-sentence
            length = stream[0].size
            while length < n:
                part = others[int(rng.integers(len(others)))].samples
                stream.append(part)
                length += part.size
            talker = np.concatenate(stream)[:n].astype(np.float64)
            rms = np.sqrt(np.mean(talker ** 2))
            mix += talker / rms if rms > 0 else talker
        return mix.astype(np.float32), talkers

    def _telephone(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        from audiomentations import HighPassFilter

        codec = self.cfg.telephone_codecs[int(rng.integers(len(self.cfg.telephone_codecs)))]
        highpass = HighPassFilter(min_cutoff_freq=TELEPHONE_HIGHPASS_HZ, max_cutoff_freq=TELEPHONE_HIGHPASS_HZ,
                                  min_rolloff=12, max_rolloff=12, p=1.0)
        with seeded_globals(0):
            y = highpass(x, RATE)
        narrow = resample(y, RATE, TELEPHONE_RATE)  # soxr's anti-aliasing: nothing above 4 kHz survives
        coded = ffmpeg_roundtrip(narrow, TELEPHONE_RATE, codec)
        wide = resample(coded, TELEPHONE_RATE, RATE)
        wide = np.pad(wide[:x.size], (0, max(0, x.size - wide.size)))
        return wide.astype(np.float32), {"kind": "telephone", "codec": codec, "sample_rate": TELEPHONE_RATE,
                                         "highpass_hz": TELEPHONE_HIGHPASS_HZ}

    def _codec(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        codec = self.cfg.codecs[int(rng.integers(len(self.cfg.codecs)))]
        rates = self.cfg.codec_bitrates_kbps.get(codec) or [24]
        bitrate = int(rates[int(rng.integers(len(rates)))])
        return ffmpeg_roundtrip(x, RATE, codec, bitrate), {"kind": "codec", "codec": codec, "bitrate_kbps": bitrate}

    def _gain(self, x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        from audiomentations import Gain

        wanted = float(rng.uniform(self.cfg.gain_min_db, self.cfg.gain_max_db))
        peak = float(np.max(np.abs(x)))
        gain = min(wanted, 20 * np.log10(PEAK / peak)) if peak > 0 else wanted
        with seeded_globals(0):
            y = Gain(min_gain_db=gain, max_gain_db=gain, p=1.0)(x, RATE)
        return y, round(float(gain), 3)


def _mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """x plus noise scaled so that RMS(x) / RMS(noise) is snr_db (audiomentations' helpers, its SNR definition)."""
    from audiomentations.core.utils import calculate_desired_noise_rms, calculate_rms

    noise_rms = calculate_rms(noise)
    if noise_rms == 0:
        return x
    wanted = calculate_desired_noise_rms(calculate_rms(x), snr_db)
    return (x + noise * (wanted / noise_rms)).astype(np.float32)
