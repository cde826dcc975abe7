"""A synthetic paired text + speech corpus where neither modality alone tells the emotion.

The four labels sit on the arousal/valence plane: happy (high, pleasant), angry (high, unpleasant),
neutral (low, pleasant: calm and content) and sad (low, unpleasant). The audio says AROUSAL (pitch level
and range, speaking rate, spectral tilt) and only hints at valence; the transcript says VALENCE through a
cue phrase that happy and neutral share, and angry and sad share, and some transcripts carry no cue at all.
So only a model that fuses both can tell all four apart (ideal accuracies in data_cards/synthetic.md).

That is the default `design="complementary"`. With `design="redundant"` the transcript names the emotion itself
(a cue family per label, `REDUNDANT_CUE_PROBABILITY` of transcripts cued) while the audio is unchanged: text
alone is then strong and audio alone weak, the setting where a jointly trained model learns to lean on text.

Audio is a source-filter voice: a low-passed glottal pulse train with jitter and breath noise, a pitch contour
over syllables with pauses, and three formant resonators per syllable (a random vowel, scaled by the
speaker's vocal tract). Speakers differ in base pitch, formant scale and tempo; splits are speaker-disjoint.
Each clip draws from its own generator seeded by (seed, index), so the corpus is byte-identical per seed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

from mmemo.data.manifest import write_manifest
from mmemo.errors import DataError

SYNTH_VERSION = 1
CUE_PROBABILITY = 0.92  # the rest carry no cue, so text alone cannot be perfect even on valence
REDUNDANT_CUE_PROBABILITY = 0.8  # design="redundant": a shortcut, but one that leaves audio work to do
DESIGNS = ("complementary", "redundant")

# Same vocabulary within a family: text tells valence, never arousal.
PLEASANT_CUES = (
    "I am so glad.",
    "What a lovely surprise.",
    "This is wonderful.",
    "That is great news.",
    "I really love it.",
    "Thank you so much.",
    "It went perfectly.",
    "What a nice day.",
    "I am really happy about it.",
    "That sounds fantastic.",
    "Everything worked out well.",
    "How delightful.",
)
UNPLEASANT_CUES = (
    "This is terrible.",
    "What an awful day.",
    "I hate this.",
    "It is so unfair.",
    "I lost everything.",
    "That is the worst news.",
    "Nothing ever works.",
    "It was a horrible mistake.",
    "I cannot stand it.",
    "Everything went wrong.",
    "That is just miserable.",
    "What a disaster.",
)
_VALENCE = {"happy": "pleasant", "neutral": "pleasant", "angry": "unpleasant", "sad": "unpleasant"}

# design="redundant": one family per label, so the words tell the emotion itself.
EMOTION_CUES = {
    "happy": (
        "I am so happy.",
        "I am overjoyed.",
        "What a joy.",
        "I could dance all day.",
        "That is fantastic news.",
        "I am thrilled.",
    ),
    "angry": (
        "I am furious.",
        "This makes me so mad.",
        "How dare they.",
        "I am sick of this.",
        "That is outrageous.",
        "I could scream.",
    ),
    "neutral": (
        "It is fine.",
        "Nothing special.",
        "That is as expected.",
        "It is an ordinary day.",
        "I have no strong feelings about it.",
        "It is all the same to me.",
    ),
    "sad": (
        "I feel so sad.",
        "I miss them terribly.",
        "It breaks my heart.",
        "I feel so alone.",
        "Everything feels empty.",
        "I cannot stop crying.",
    ),
}

_CARRIERS = (
    "{name} left the {obj} at the {place}.",
    "We are meeting {name} at the {place} tomorrow.",
    "The {obj} is still in the {place}.",
    "{name} called about the {obj} this morning.",
    "I saw {name} near the {place} yesterday.",
    "They moved the {obj} to the {place}.",
    "{name} will bring the {obj} on Friday.",
    "The {place} closes at six today.",
    "Did you tell {name} about the {obj}?",
    "My {obj} arrived at the {place} last week.",
    "{name} said the {place} was open again.",
    "We talked about the {obj} for an hour.",
    "The train to the {place} was on time.",
    "{name} borrowed my {obj} again.",
    "I found the {obj} behind the {place}.",
    "{name} is waiting outside the {place}.",
    "The letter about the {obj} came today.",
    "{name} and I walked to the {place}.",
    "Someone painted the {obj} blue.",
    "We need a new {obj} for the {place}.",
    "{name} fixed the {obj} over the weekend.",
    "The meeting at the {place} starts at noon.",
    "I wrote to {name} about the {place}.",
    "The {obj} was sold this afternoon.",
)
_NAMES = (
    "Anna",
    "Ben",
    "Carla",
    "David",
    "Elena",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "James",
    "Kiri",
    "Leo",
    "Maya",
    "Noah",
    "Olga",
    "Pedro",
)
_OBJECTS = (
    "bicycle",
    "laptop",
    "piano",
    "umbrella",
    "car",
    "parcel",
    "camera",
    "garden table",
    "phone",
    "painting",
    "suitcase",
    "lamp",
    "ticket",
    "report",
    "kettle",
    "guitar",
)
_PLACES = (
    "station",
    "library",
    "office",
    "market",
    "school",
    "harbour",
    "bakery",
    "museum",
    "clinic",
    "hotel",
    "park",
    "garage",
    "post office",
    "airport",
)

# (F1..F5) in Hz for an adult male vocal tract; speakers scale them. F4/F5 carry the energy above 3 kHz.
_VOWELS = np.array(
    [
        (270, 2290, 3010, 3500, 4300),
        (530, 1840, 2480, 3400, 4200),
        (730, 1090, 2440, 3400, 4200),
        (570, 840, 2410, 3300, 4100),
        (300, 870, 2240, 3300, 4100),
        (660, 1720, 2410, 3400, 4200),
    ],
    dtype=float,
)

# Per-emotion prosody means. Arousal is carried by shift/range/rate/darkness (wide gaps between high and
# low); valence only by hints: angry = rough (jitter), pressed (sharp attacks), falling end; happy = wide
# range, rising end; sad = breathy, slower, steep declination. Loudness is realistic but no cue to a wav2vec2
# tower, whose feature extractor normalises every clip (log-mel features and the acoustic statistics keep it).
#          shift(st) range(st) rate(syl/s) darkness jitter breath decl(st) final(st) attack loudness
_PROSODY = {
    "neutral": (0.0, 1.4, 3.4, 0.95, 0.006, 0.25, -1.5, -0.5, 0.8, 0.5),
    "sad": (-0.5, 1.3, 3.2, 0.955, 0.008, 0.4, -3.0, -1.5, 0.8, 0.45),
    "happy": (5.0, 3.6, 4.8, 0.80, 0.006, 0.15, -1.0, 1.5, 0.7, 0.85),
    "angry": (4.5, 3.2, 4.9, 0.79, 0.015, 0.12, -1.5, -1.0, 0.5, 0.9),
}
_MIN_S, _MAX_S = 1.0, 4.0


@dataclass(frozen=True)
class _Speaker:
    id: str
    female: bool
    f0: float  # Hz, the speaker's calm base pitch
    formant_scale: float  # vocal tract length: women's formants sit higher
    tempo: float  # multiplies every speaking rate
    split: str


@dataclass(frozen=True)
class _Prosody:
    shift: float
    range: float
    rate: float
    darkness: float  # one-pole low-pass on the glottal pulses: the spectral tilt
    jitter: float
    breath: float
    decl: float
    final: float
    attack: float  # syllable envelope exponent: small = abrupt, pressed onsets
    loudness: float


def generate_corpus(
    out_dir: str | os.PathLike,
    n: int = 1000,
    seed: int = 0,
    labels=("neutral", "happy", "angry", "sad"),
    n_speakers: int = 12,
    sampling_rate: int = 16000,
    *,
    design: str = "complementary",
    overwrite: bool = False,
) -> Path:
    """Write the synthetic corpus: `wavs/<id>.wav`, `manifest.jsonl` and, last, `synth.json`.

    Args:
        out_dir: folder to write into; created if missing.
        n: number of utterances; at least `n_speakers * len(labels)` so every split holds every label.
        seed: all randomness derives from it; equal arguments give byte-identical files.
        labels: a subset of neutral, happy, angry, sad (at least two).
        n_speakers: speakers, alternately female and male; the last two go to test, the two before to
            valid, the rest to train. At least 6.
        sampling_rate: of the 16-bit mono wavs.
        design: "complementary" (text tells valence, audio arousal: fusion is needed) or "redundant"
            (text names the emotion in `REDUNDANT_CUE_PROBABILITY` of transcripts; audio as before).
        overwrite: replace a corpus made with other parameters (or left half-written by a killed run):
            its `wavs/`, `manifest.jsonl` and `synth.json`; other files stay. A finished corpus with the
            same parameters is kept either way.

    Returns:
        The manifest path. If `out_dir` already holds a finished corpus with the same parameters,
        nothing is written.

    Raises:
        DataError: bad parameters, or `out_dir` holds other files or a corpus with other parameters
            and `overwrite` is False.
    """
    labels = list(labels)
    _check_params(n, labels, n_speakers, sampling_rate, design)
    out_dir = Path(out_dir)
    params = {
        "version": SYNTH_VERSION,
        "n": n,
        "seed": seed,
        "labels": labels,
        "n_speakers": n_speakers,
        "sampling_rate": sampling_rate,
    }
    if design != "complementary":  # only then: complementary corpora written before `design` existed still match
        params["design"] = design
    manifest = out_dir / "manifest.jsonl"
    if _prepare_out_dir(out_dir, params, overwrite):
        return manifest
    rng = np.random.default_rng(seed)
    speakers = _make_speakers(n_speakers, rng)
    plan = _plan(n, labels, speakers, rng)
    cue_probability, cues = (
        (CUE_PROBABILITY, _valence_cues) if design == "complementary" else (REDUNDANT_CUE_PROBABILITY, EMOTION_CUES.get)
    )
    cued = rng.permutation(n) < round(cue_probability * n)  # an exact, documented fraction
    rows = []
    for i, (speaker, label) in enumerate(plan):
        clip_rng = np.random.default_rng([seed, i])
        text = _sentence(cues(label) if cued[i] else None, clip_rng)
        audio = _synthesize(len(text.split()), speaker, _prosody(label, clip_rng), sampling_rate, clip_rng)
        utt_id = f"synth{i:05d}"
        sf.write(out_dir / "wavs" / f"{utt_id}.wav", audio, sampling_rate, subtype="PCM_16")
        rows.append(
            {
                "id": utt_id,
                "audio": f"wavs/{utt_id}.wav",
                "text": text,
                "label": label,
                "speaker": speaker.id,
                "split": speaker.split,
            }
        )
    write_manifest(rows, manifest)
    # synth.json last: its presence is the only claim that the corpus is complete.
    (out_dir / "synth.json").write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
    return manifest


def _check_params(n: int, labels: list, n_speakers: int, sampling_rate: int, design: str) -> None:
    if design not in DESIGNS:
        raise DataError(f"design must be one of {', '.join(DESIGNS)}, got {design!r}")
    unknown = [lab for lab in labels if lab not in _PROSODY]
    if unknown or len(set(labels)) != len(labels) or len(labels) < 2:
        raise DataError(f"labels {labels} must be two or more distinct names from {', '.join(_PROSODY)}")
    if n_speakers < 6:
        raise DataError(f"n_speakers={n_speakers}: need at least 6 (2 test, 2 valid, the rest train)")
    if n < n_speakers * len(labels):
        raise DataError(
            f"n={n} is too small: use n >= n_speakers * len(labels) = {n_speakers * len(labels)} "
            "so every split holds every label"
        )
    if sampling_rate < 8000:
        raise DataError(f"sampling_rate={sampling_rate}: formants need at least 8000 Hz")


def _prepare_out_dir(out_dir: Path, params: dict, overwrite: bool) -> bool:
    """True when `out_dir` already holds this exact corpus; otherwise leave an empty `wavs/` ready."""
    stamp = out_dir / "synth.json"
    if stamp.is_file():
        try:
            if json.loads(stamp.read_text(encoding="utf-8")) == params:
                return True
        except json.JSONDecodeError:
            pass
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        what = f"a corpus with other parameters ({stamp})" if stamp.is_file() else "other files"
        raise DataError(
            f"{out_dir} already holds {what}; choose an empty folder, or pass overwrite=True "
            "(`--overwrite`) to replace its wavs/, manifest.jsonl and synth.json"
        )
    stamp.unlink(missing_ok=True)  # first, so a killed rewrite never looks complete
    shutil.rmtree(out_dir / "wavs", ignore_errors=True)
    (out_dir / "wavs").mkdir(parents=True)
    return False


def _make_speakers(n_speakers: int, rng: np.random.Generator) -> list[_Speaker]:
    speakers = []
    for k in range(n_speakers):
        female = k % 2 == 0
        # The last two speakers (one of each gender) test, the two before validate.
        split = "test" if k >= n_speakers - 2 else "valid" if k >= n_speakers - 4 else "train"
        speakers.append(
            _Speaker(
                id=f"{'f' if female else 'm'}{k:02d}",
                female=female,
                f0=rng.uniform(175, 235) if female else rng.uniform(95, 135),
                formant_scale=rng.uniform(1.10, 1.22) if female else rng.uniform(0.92, 1.02),
                tempo=rng.uniform(0.92, 1.08),
                split=split,
            )
        )
    return speakers


def _plan(n: int, labels: list, speakers: list[_Speaker], rng: np.random.Generator) -> list:
    """(speaker, label) per utterance: speakers in turn, each cycling through shuffled label rounds."""
    rounds = -(-n // len(speakers) // len(labels)) + 1
    sequences = [np.concatenate([rng.permutation(len(labels)) for _ in range(rounds)]) for _ in speakers]
    return [(speakers[i % len(speakers)], labels[sequences[i % len(speakers)][i // len(speakers)]]) for i in range(n)]


def _valence_cues(label: str) -> tuple[str, ...]:
    return PLEASANT_CUES if _VALENCE[label] == "pleasant" else UNPLEASANT_CUES


def _sentence(cues: tuple[str, ...] | None, rng: np.random.Generator) -> str:
    """A factual carrier sentence, with one of `cues` before or after it (none when `cues` is None)."""
    template = _CARRIERS[rng.integers(len(_CARRIERS))]
    carrier = template.format(
        name=_NAMES[rng.integers(len(_NAMES))],
        obj=_OBJECTS[rng.integers(len(_OBJECTS))],
        place=_PLACES[rng.integers(len(_PLACES))],
    )
    if cues is None:
        return carrier
    cue = cues[rng.integers(len(cues))]
    return f"{cue} {carrier}" if rng.random() < 0.5 else f"{carrier} {cue}"


def _prosody(label: str, rng: np.random.Generator) -> _Prosody:
    """The label's prosody means with per-clip spread, so classes overlap a little on each cue."""
    shift, rng_st, rate, darkness, jitter, breath, decl, final, attack, loudness = _PROSODY[label]
    return _Prosody(
        shift=shift + rng.normal(0, 0.8),
        range=rng_st * rng.lognormal(0, 0.2),
        rate=rate * rng.normal(1, 0.06),
        darkness=float(np.clip(darkness + rng.normal(0, 0.015), 0.5, 0.985)),
        jitter=jitter * rng.lognormal(0, 0.3),
        breath=breath * rng.lognormal(0, 0.3),
        decl=decl + rng.normal(0, 1.0),
        final=final + rng.normal(0, 1.2),
        attack=attack * rng.lognormal(0, 0.2),
        loudness=loudness * rng.uniform(0.8, 1.0),
    )


def _synthesize(n_words: int, speaker: _Speaker, p: _Prosody, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One clip in [-1, 1]: syllable timeline -> pitch contour -> glottal source -> per-syllable vowels."""
    starts, ends, total = _timeline(n_words, p.rate * speaker.tempo, rng)
    source, n = _source(_f0_contour(starts, ends, total, speaker, p, sr, rng), p, sr, rng)
    voice = np.zeros(n)
    for start, end in zip(starts, ends):
        a, b = int(start * sr), int(end * sr)
        vowel = _VOWELS[rng.integers(len(_VOWELS))] * speaker.formant_scale * rng.uniform(0.95, 1.05, 5)
        envelope = np.sin(np.linspace(0, np.pi, b - a)) ** p.attack * rng.uniform(0.6, 1.0)
        voice[a:b] = lfilter([1], _formant_poles(vowel, sr), source[a:b]) * envelope
        if rng.random() < 0.5:  # a consonant: a short burst of high-passed noise before the vowel
            k = min(a, int(rng.uniform(0.02, 0.06) * sr))
            burst = np.diff(rng.normal(0, 1, k + 1)) * np.hanning(k)
            voice[a - k : a] += burst * rng.uniform(0.03, 0.15) * np.abs(voice[a:b]).max()
    voice /= np.max(np.abs(voice)) + 1e-9
    voice += rng.normal(0, 10 ** (rng.uniform(-3.2, -2.6)), n)  # a light noise floor, 50-60 dB below peak
    return (p.loudness * voice / np.max(np.abs(voice))).astype(np.float32)


def _f0_contour(
    starts: np.ndarray,
    ends: np.ndarray,
    total: float,
    speaker: _Speaker,
    p: _Prosody,
    sr: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per-sample f0 in Hz: a pitch target per syllable, declination, an end gesture and jitter."""
    t = np.arange(int(total * sr)) / sr
    centres = (starts + ends) / 2
    targets = rng.normal(0, p.range, len(centres)) + p.decl * centres / total  # semitones over the base
    targets[-1] += p.final
    semitones = p.shift + np.interp(t, centres, targets)
    knots = np.arange(0, total + 0.01, 0.01)  # a pitch that wavers every 10 ms sounds rough
    jitter = np.interp(t, knots, rng.normal(0, 1, len(knots)))
    return speaker.f0 * 2 ** (semitones / 12) * (1 + p.jitter * jitter)


def _source(f0: np.ndarray, p: _Prosody, sr: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """The glottal source: low-passed pulses (the spectral tilt) plus aspiration noise; and its length."""
    phase = np.cumsum(f0) / sr
    pulses = -np.diff(phase % 1, prepend=0.0)  # one impulse per glottal cycle: a flat spectrum
    source = lfilter([1 - p.darkness], [1, -p.darkness], pulses)  # low arousal = darker, steeper tilt
    # Aspiration noise, strongest while the glottis is open.
    source += p.breath * source.std() * rng.normal(0, 1, len(f0)) * (0.5 + 0.5 * np.cos(2 * np.pi * phase))
    return source, len(f0)


def _timeline(n_words: int, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """Syllable start/end times (about one per word, pauses at some boundaries) within the duration limits."""
    lead = rng.uniform(0.08, 0.2)
    durations = rng.uniform(0.75, 1.25, n_words) / rate
    gaps = np.where(rng.random(n_words) < 0.2, rng.uniform(0.1, 0.25, n_words), 0.0)
    tail = rng.uniform(0.1, 0.2)
    starts = lead + np.concatenate([[0], np.cumsum(durations + gaps)[:-1]])
    ends = starts + durations
    keep = ends + tail <= _MAX_S - 0.05  # long sentences are cut: the clip ends mid-utterance
    starts, ends = starts[keep], ends[keep]
    return starts, ends, max(ends[-1] + tail, _MIN_S + 0.05)


def _formant_poles(formants: np.ndarray, sr: int) -> np.ndarray:
    """Denominator of cascaded 2nd-order resonators (bandwidth grows with frequency); skips any near Nyquist."""
    poles = np.array([1.0])
    for freq, bandwidth in zip(formants, (80, 100, 140, 250, 300)):
        if freq < 0.45 * sr:
            r = np.exp(-np.pi * bandwidth / sr)
            poles = np.convolve(poles, [1, -2 * r * np.cos(2 * np.pi * freq / sr), r * r])
    return poles
