"""Corpus importers: turn a corpus as its official release unpacks into manifest rows (data_cards/ has one card per
corpus: licence, protocol, pitfalls).

    rows = prepare("crema_d", "/data/CREMA-D", output="manifests/crema_d.jsonl")

Every importer takes ROOT (the release folder, or a folder up to two levels above it) and keyword options listed
in `OPTIONS`, and returns rows with absolute `audio` paths (so a manifest can live anywhere), lowercase English
labels from one shared vocabulary (neutral, calm, happy, sad, angry, fearful, disgusted, surprised, bored, excited,
frustrated; MELD's sentiment option: positive/negative/neutral), ids prefixed with the corpus name ("emodb-03a01Fa"),
and a `split`. Corpora without an official split get a speaker-disjoint one: speakers in sorted order are cut into
5 groups (`fold`), group 5 is test, group 4 valid, groups 1-3 train, i.e. one rotation of 5-fold speaker
cross-validation. Files whose names do not parse are skipped with a warning; a ROOT that does not look like the
corpus is a DataError that says which folder or file was expected.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path

from mmemo.data.corpora import acted, generic, iemocap, meld
from mmemo.data.corpora._common import Option
from mmemo.data.manifest import write_manifest
from mmemo.errors import DataError
from mmemo.io import check_output

IMPORTERS: dict[str, Callable[..., list[dict]]] = {
    "iemocap": iemocap.import_iemocap,
    "meld": meld.import_meld,
    "crema_d": acted.import_crema_d,
    "ravdess": acted.import_ravdess,
    "emodb": acted.import_emodb,
    "tess": acted.import_tess,
    "esd": acted.import_esd,
    "casia": acted.import_casia,
    "generic": generic.import_generic,
}

# Corpus -> option name -> Option(type, default, help, choices); a CLI turns each into `--option-name`.
OPTIONS: dict[str, dict[str, Option]] = {**iemocap.OPTIONS, **meld.OPTIONS, **acted.OPTIONS, **generic.OPTIONS}

__all__ = ["IMPORTERS", "OPTIONS", "Option", "prepare"]


def prepare(
    corpus: str,
    root: str | os.PathLike,
    *,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    **options,
) -> list[dict]:
    """Import a corpus and optionally write its manifest.

    Args:
        corpus: a key of `IMPORTERS` ("crema-d" and "CREMA_D" also work).
        root: the corpus release folder (or a folder up to two levels above it).
        output: the manifest to write (.jsonl, or .csv); None writes nothing.
        overwrite: replace an existing `output`.
        **options: the corpus's options from `OPTIONS`; strings such as "true" or "6" are converted to the
            option's type, so CLI `key=value` text can be passed through. For MELD, `audio_dir` defaults to
            `meld_audio/` next to `output`.

    Returns:
        The manifest rows.

    Raises:
        DataError: an unknown corpus or option, an option value of the wrong type, an existing `output` without
            `overwrite`, or whatever the importer raises about ROOT.
    """
    name = corpus.strip().lower().replace("-", "_")
    if name not in IMPORTERS:
        close = difflib.get_close_matches(name, list(IMPORTERS), n=1)
        hint = f"did you mean {close[0]!r}? Or choose" if close else "choose"
        raise DataError(f"unknown corpus {corpus!r}; {hint} one of {', '.join(IMPORTERS)}")
    spec = OPTIONS[name]
    unknown = sorted(set(options) - set(spec))
    if unknown:
        known = ", ".join(spec) or "none"
        raise DataError(f"{name}: unknown option(s) {', '.join(unknown)}; its options are: {known}")
    kwargs = {key: _coerce(name, key, value, spec[key]) for key, value in options.items() if value is not None}
    if output is not None:
        output = check_output(output, overwrite=overwrite, what="manifest")
        if name == "meld" and not kwargs.get("text_only") and "audio_dir" not in kwargs:
            kwargs["audio_dir"] = str(output.parent / "meld_audio")
    rows = IMPORTERS[name](Path(root), **kwargs)
    if output is not None:
        write_manifest(rows, output)
    return rows


def _coerce(corpus: str, key: str, value, option: Option):
    """`value` as the option's type (text from a CLI becomes bool/int), checked against its choices."""
    if option.type is bool and isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise DataError(f"{corpus}: option {key} takes true or false, got {value!r}")
        value = value.strip().lower() in ("true", "1", "yes")
    try:
        value = option.type(value)
    except (TypeError, ValueError):
        raise DataError(f"{corpus}: option {key} takes a {option.type.__name__}, got {value!r}") from None
    if option.choices and value not in option.choices:
        raise DataError(f"{corpus}: option {key} must be one of {', '.join(map(str, option.choices))}, got {value!r}")
    return value
