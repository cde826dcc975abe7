"""Several corpora, one training set: the manifests of `data.manifests`, each read through its own label map.

    data:
      manifests:
        - {path: data/iemocap.jsonl, label_map: {excited: happy, frustrated: null}}
        - {path: data/emodb.jsonl, name: emodb, label_map: {boredom: null}, weight: 2}
      corpus_sampling: weighted

A label map renames a corpus's labels into the shared label set (`excited: happy`); `null` drops that label's
rows; labels it does not list stay as they are. A key that no row of the corpus carries is an error, so a typo
cannot silently keep a label. Every row keeps its corpus's name in `corpus`: in `data.manifests` the entry's
`name` (a `corpus` column in that file is replaced, with a warning); for a lone `data.manifest` the rows' own
`corpus` column, or the file's name where a row has none. With several entries ids and speakers become
"corpus/id" and "corpus/speaker"; a lone manifest whose `corpus` column names several corpora gets its speakers
prefixed the same way. Either way two corpora's speaker "1" are two people: per-speaker statistics, speaker
folds and the id checks must not merge them. The maps travel with the model (`model.label_maps`), so
`mmemo evaluate --corpus NAME` can score a corpus's own manifest in the shared label set.

`data.corpus_sampling` sets each corpus's share of an epoch's training rows: `natural` (every row once, the
default), `equal` (each corpus the same share: a small corpus is repeated, a large one subsampled, afresh each
epoch) or `weighted` (shares in proportion to `weight`). An epoch keeps the training split's size, and batches
are still bucketed by length (`mmemo.data.dataset.BucketBatchSampler`).
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mmemo.data.manifest import read_manifest
from mmemo.errors import ConfigError, DataError

CONFIG_SUFFIXES = (".yaml", ".yml")  # a source with one of these is a config whose corpora to read, not a manifest
ENTRY_KEYS = ("path", "name", "label_map", "weight")


@dataclass(frozen=True)
class Corpus:
    """One manifest of a pooled run: where it is, what it is called, how its labels map, its sampling weight."""

    path: str
    name: str
    label_map: dict = field(default_factory=dict)  # label -> shared label, or None to drop its rows
    weight: float = 1.0


def corpora_of(data) -> list[Corpus]:
    """The corpora a DataConfig names: its `manifests` entries, or its single `manifest` as one corpus.

    Raises:
        ConfigError: neither or both of `manifest` and `manifests` are set, an entry is not a mapping, lacks
            `path`, has an unknown key, a label map that is not label -> label-or-null, a weight that is not a
            positive number, or two entries share a name or a file; weights are given without
            `corpus_sampling: weighted` (they would be ignored). Loading a config runs it once, as a dry run.
    """
    if data.manifest and data.manifests:
        raise ConfigError("set data.manifest (one corpus) or data.manifests (several), not both")
    if data.manifest:
        return [Corpus(data.manifest, "")]  # unnamed: its rows' `corpus` column names them (see `relabel`)
    if not data.manifests:
        raise ConfigError(
            "data.manifest is empty; set it in the config or pass data.manifest=PATH "
            "(or list several corpora in data.manifests)"
        )
    corpora = [_parse_entry(entry, f"data.manifests[{i}]") for i, entry in enumerate(data.manifests)]
    # Before the names: one file under two names would put the same clips in training and test, as two speakers.
    first: dict[Path, int] = {}
    for i, c in enumerate(corpora):
        j = first.setdefault(Path(c.path).resolve(), i)
        if j != i:
            raise ConfigError(
                f"data.manifests[{j}] and data.manifests[{i}] are the same file {c.path}; list each manifest once "
                "(to give a corpus more of each epoch, set its `weight` with data.corpus_sampling: weighted)"
            )
    names = Counter(c.name for c in corpora)
    twice = sorted(n for n, k in names.items() if k > 1)
    if twice:
        raise ConfigError(f"data.manifests: the name(s) {twice} are used twice; give each corpus its own `name`")
    weighted = [c.name for c in corpora if c.weight != 1.0]
    if weighted and data.corpus_sampling != "weighted":
        raise ConfigError(
            f"data.manifests: {', '.join(weighted)} set a weight, which only data.corpus_sampling: weighted uses "
            f"(it is {data.corpus_sampling}); set data.corpus_sampling=weighted or drop the weights"
        )
    return corpora


def _parse_entry(entry, where: str) -> Corpus:
    """One `data.manifests` entry checked; `where` ("data.manifests[1]") names it in errors."""
    if isinstance(entry, (str, os.PathLike)):
        entry = {"path": os.fspath(entry)}
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping like {{path: data/x.jsonl, label_map: {{...}}}}, got {entry!r}")
    for key in entry:
        if key not in ENTRY_KEYS:
            close = difflib.get_close_matches(str(key), ENTRY_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(ENTRY_KEYS)}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
    path = entry.get("path")
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}: `path` (the corpus's manifest file) is missing")
    name = entry.get("name") or Path(path).stem
    if not isinstance(name, str) or "/" in name:
        raise ConfigError(f"{where}: `name` must be a string without '/', got {name!r}")
    label_map = entry.get("label_map") or {}
    if not isinstance(label_map, dict):
        raise ConfigError(f"{where} ({name}): `label_map` must map labels to labels (or null), got {label_map!r}")
    for key, value in label_map.items():
        if not isinstance(key, str) or not (value is None or isinstance(value, str) and value.strip()):
            raise ConfigError(
                f"{where} ({name}): label_map entry {key!r}: {value!r} must map a label to a label or null "
                "(YAML reads unquoted yes/no/on/off/true/false as booleans: quote such labels)"
            )
    weight = entry.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
        raise ConfigError(f"{where} ({name}): `weight` must be a positive number, got {weight!r}")
    return Corpus(path, name, {k.strip(): v if v is None else v.strip() for k, v in label_map.items()}, float(weight))


def read_corpora(corpora: list[Corpus]) -> list[dict]:
    """Every corpus's rows, label-mapped, with `corpus` set (and ids and speakers prefixed when there are several).

    Raises:
        ConfigError: a label map names a label that no row of its corpus carries (the message suggests the
            closest one).
        DataError: a manifest is invalid (see `read_manifest`), or two rows share an id.
    """
    pooled = len(corpora) > 1
    rows = []
    for corpus in corpora:
        rows += relabel(read_manifest(corpus.path), corpus, prefix=pooled)
    return rows if pooled else separate_speakers(rows)


def read_lone_manifest(path: str | os.PathLike) -> list[dict]:
    """A manifest's rows as training reads a lone `data.manifest`: its `corpus` column names their corpora (its
    file's name where a row has none), and when it names several their speakers are kept apart."""
    return read_corpora([Corpus(os.fspath(path), "")])


def is_config(source: str | os.PathLike) -> bool:
    """True when `source` names a YAML config (.yaml/.yml) rather than a manifest."""
    return Path(source).suffix.lower() in CONFIG_SUFFIXES


def separate_speakers(rows: list[dict]) -> list[dict]:
    """Rows of one manifest whose `corpus` column names several corpora, with speakers written "corpus/speaker"
    (two corpora's speaker "1" are two people); unchanged when it names one, or a speaker already carries it."""
    if len(corpus_names(rows)) < 2:
        return rows
    return [
        row
        if row["speaker"].startswith(f"{row['corpus']}/")
        else {**row, "speaker": f"{row['corpus']}/{row['speaker']}"}
        for row in rows
    ]


def relabel(rows: list[dict], corpus: Corpus, prefix: bool = False) -> list[dict]:
    """Copies of one corpus's rows through its label map, without the dropped ones, with `corpus` set.

    Args:
        rows: the corpus's manifest rows (`read_manifest`).
        corpus: the corpus they come from; an unnamed one (a lone `data.manifest`) keeps each row's own `corpus`
            column, or takes its file's name.
        prefix: write ids and speakers as "corpus/id" and "corpus/speaker" (several corpora in one run).

    Raises:
        ConfigError: the label map has a key that no row carries.
    """
    present = Counter(row["label"] for row in rows)
    for key in corpus.label_map:
        if key not in present:
            close = difflib.get_close_matches(key, present, n=1)
            raise ConfigError(
                f"corpus {corpus.name!r} ({corpus.path}): its label_map maps {key!r}, but no row has that label"
                + (f"; did you mean {close[0]!r}?" if close else ".")
                + f" Its labels are: {', '.join(sorted(present))}"
            )
    own = sorted({row["corpus"] for row in rows if row.get("corpus")} - {corpus.name})
    if corpus.name and own:
        warnings.warn(
            f"corpus {corpus.name!r} ({corpus.path}): its rows' `corpus` column ({', '.join(own)}) is replaced by "
            "the data.manifests entry's name; to keep those corpora apart, give each its own manifest and entry"
        )
    out = []
    for row in rows:
        label = corpus.label_map.get(row["label"], row["label"])
        if label is None:
            continue
        name = corpus.name or row.get("corpus") or Path(corpus.path).stem
        row = {**row, "label": label, "corpus": name}
        if prefix:
            row["id"], row["speaker"] = f"{name}/{row['id']}", f"{name}/{row['speaker']}"
        out.append(row)
    if not out:
        raise DataError(f"corpus {corpus.name!r} ({corpus.path}): its label_map drops every row")
    return out


def warn_partial_labels(rows: list[dict]) -> None:
    """Warn when several corpora are pooled and some labels occur in only some of them: often a missing map
    (anger vs angry) rather than a real class one corpus lacks."""
    by_label: dict[str, set] = {}
    for row in rows:
        by_label.setdefault(row["label"], set()).add(row["corpus"])
    names = {row["corpus"] for row in rows}
    partial = {label: sorted(found) for label, found in sorted(by_label.items()) if found != names}
    if len(names) > 1 and partial:
        listing = "; ".join(f"{label} (only in {', '.join(found)})" for label, found in partial.items())
        warnings.warn(
            f"labels not shared by every corpus: {listing}. If one is another corpus's label spelt differently, "
            "map it in that corpus's label_map; to keep only shared classes, drop it (label: null) or set model.labels"
        )


def corpus_shares(rows: list[dict], corpora: list[Corpus], sampling: str) -> tuple[list[int], list[float]]:
    """Each training row's corpus index and each corpus's share of an epoch under `equal` or `weighted` sampling.

    Corpora with no rows here (a held-out corpus) get no share; the others' shares are renormalised.
    """
    names = sorted({row["corpus"] for row in rows})
    weights = {c.name: c.weight for c in corpora}
    raw = [weights.get(name, 1.0) if sampling == "weighted" else 1.0 for name in names]
    index = {name: i for i, name in enumerate(names)}
    return [index[row["corpus"]] for row in rows], [w / sum(raw) for w in raw]


def rows_per_corpus(splits: dict[str, list[dict]]) -> dict[str, dict[str, int]]:
    """{corpus: {split: rows}} in corpus-name order; a split a corpus has no rows in is left out."""
    counts = Counter((row.get("corpus") or "", name) for name, rows in splits.items() for row in rows)
    by_corpus: dict[str, dict[str, int]] = {}
    for (corpus, split), n in sorted(counts.items()):
        by_corpus.setdefault(corpus, {})[split] = n
    return by_corpus


def corpus_names(rows: list[dict]) -> list[str]:
    """The sorted corpus names of `rows` (their `corpus` column; rows without one count as "")."""
    return sorted({row.get("corpus") or "" for row in rows})
