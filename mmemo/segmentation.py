"""Speech segmentation of long recordings: where the speech is, and the windows a recording is classified in.

Frame energy is compared with a threshold adapted to the recording (its loud level minus `SPEECH_TOP_DB`, and
at least `NOISE_MARGIN_DB` over its noise floor); silences of `MIN_SILENCE_SECONDS` or more are skipped, shorter
pauses stay inside speech. Each speech region longer than the window is cut into windows overlapping by
`overlap_seconds`. `EmotionRecognizer.predict` classifies every region or window of audio longer than
`window_seconds` on its own.
"""

from __future__ import annotations

import numpy as np

WINDOW_SECONDS = 8.0  # the training crop length (data.max_audio_seconds); longer audio is segmented
OVERLAP_SECONDS = 1.0
SPEECH_TOP_DB = 35.0  # frames this far below the recording's loud level (95th-percentile frame) are silence
NOISE_MARGIN_DB = 6.0  # ... and so are frames within this of its noise floor (10th-percentile frame)
MIN_SILENCE_SECONDS = 0.5  # quieter stretches shorter than this are pauses inside speech
MIN_SPEECH_SECONDS = 0.2  # louder blips shorter than this are clicks, not speech
SPEECH_PAD_SECONDS = 0.1  # kept on each side of a speech region (onsets and decays sit under the threshold)


def speech_regions(wave: np.ndarray, rate: int) -> list[tuple[int, int]]:
    """Sample ranges [start, end) that hold speech, in order; [] when nothing stands out from the floor.

    A 25 ms frame is speech when its RMS level is above both the recording's loud level (95th-percentile
    frame) minus `SPEECH_TOP_DB` and its noise floor (10th-percentile frame) plus `NOISE_MARGIN_DB`, so the
    threshold follows the recording's gain and background noise. Pauses shorter than `MIN_SILENCE_SECONDS`
    are bridged, regions shorter than `MIN_SPEECH_SECONDS` dropped, and `SPEECH_PAD_SECONDS` kept on each side.
    """
    frame, hop = int(0.025 * rate), int(0.010 * rate)
    if len(wave) < frame:
        return [(0, len(wave))]
    frames = np.lib.stride_tricks.sliding_window_view(wave, frame)[::hop]  # (F, frame)
    level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)  # (F,) dB
    loud, floor = np.percentile(level, [95, 10])
    voiced = level > max(loud - SPEECH_TOP_DB, floor + NOISE_MARGIN_DB)
    edges = np.diff(np.concatenate([[0], voiced.astype(np.int8), [0]]))
    runs = [[s * hop, (e - 1) * hop + frame] for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1))]
    merged = []
    for run in runs:
        if merged and run[0] - merged[-1][1] < MIN_SILENCE_SECONDS * rate:
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    pad = int(SPEECH_PAD_SECONDS * rate)
    regions = []
    for a, b in merged:
        if b - a < MIN_SPEECH_SECONDS * rate:
            continue
        a, b = max(0, a - pad), min(len(wave), b + pad)
        if regions and a <= regions[-1][1]:
            regions[-1] = (regions[-1][0], b)
        else:
            regions.append((a, b))
    return regions


def speech_windows(
    wave: np.ndarray, rate: int, window_seconds: float = WINDOW_SECONDS, overlap_seconds: float = OVERLAP_SECONDS
) -> list[tuple[int, int]]:
    """The segments a long recording is classified in: its speech regions, each longer one cut into windows.

    Windows are `window_seconds` long and overlap by at least `overlap_seconds` (the last one of a region
    ends where the region ends). A recording without detectable speech is windowed whole.
    """
    size, stride = int(window_seconds * rate), int((window_seconds - overlap_seconds) * rate)
    windows = []
    for a, b in speech_regions(wave, rate) or [(0, len(wave))]:
        if b - a <= size:
            windows.append((a, b))
        else:
            windows += [(s, s + size) for s in [*range(a, b - size, stride), b - size]]
    return windows
