"""What people read: `mmemo predict` as a table on a terminal and JSON in a pipe, `mmemo evaluate` progress and JSON.

Terminal runs go through a pseudo-terminal (`pty`), so the CLI sees a real TTY as in a shell.
"""

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from mmemo.cli import main
from mmemo.data.manifest import read_manifest

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], tty_stdout: bool = True) -> tuple[int, str, str]:
    """`python -m mmemo ARGS` with stderr (and stdout when `tty_stdout`) on a pseudo-terminal.

    Returns:
        (exit status, what the terminal showed, what a piped stdout got).
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("TQDM_DISABLE", None)
    master, slave = pty.openpty()
    # a new pseudo-terminal is 0 × 0, and tqdm draws nothing that narrow; a real terminal has a size
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mmemo", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave if tty_stdout else subprocess.PIPE,
        stderr=slave,
        env=env,
        cwd=ROOT,
    )
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    piped = proc.stdout.read().decode() if proc.stdout else ""
    return proc.wait(timeout=120), shown.decode("utf-8", "replace"), piped


@pytest.fixture(scope="module")
def model(trained_run):
    return str(trained_run["model_dir"])


@pytest.fixture(scope="module")
def test_row(synth_corpus):
    return next(r for r in read_manifest(synth_corpus) if r["split"] == "test")


def test_predict_prints_a_table_on_a_terminal_and_json_otherwise(model, test_row, capsys):
    args = ["predict", model, "--text", test_row["text"], "--audio", test_row["audio"]]
    rc, shown, _ = _run(args)
    assert rc == 0, shown
    lines = [line for line in shown.replace("\r", "").splitlines() if line.strip()]
    label = lines[0].split()[0]
    assert lines[0] == f"{label}  (from text + audio)"
    rows = [line.split() for line in lines[1:]]
    assert len(rows) == 4 and rows[0][0] == label  # one row per label, the top label first
    probabilities = [float(row[1]) for row in rows]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) == pytest.approx(1, abs=3e-3)
    assert "█" in lines[1] and not shown.lstrip().startswith("{")

    # the same command in a pipe (here: captured) prints the JSON it always printed
    assert main(args) == 0
    piped = json.loads(capsys.readouterr().out)
    assert set(piped) == {"label", "probabilities", "modalities"} and piped["label"] == label
    assert [round(p, 3) for p in sorted(piped["probabilities"].values(), reverse=True)] == probabilities

    rc, shown, _ = _run([*args, "--json", "--details"])  # --json: JSON on a terminal too
    assert rc == 0 and set(json.loads(shown)) == {"label", "probabilities", "modalities", "per_modality", "segments"}


def test_predict_details_table_has_a_column_per_modality(model, test_row, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert main(["predict", model, "--text", test_row["text"], "--audio", test_row["audio"], "--details"]) == 0
    header = capsys.readouterr().out.splitlines()[2].split()
    assert header == ["text+audio", "text", "only", "audio", "only"]


def test_evaluate_shows_progress_on_a_terminal_only(model, synth_corpus):
    rc, shown, piped = _run(["evaluate", model, str(synth_corpus), "--batch-size", "4"], tty_stdout=False)
    assert rc == 0, shown
    assert "evaluate:" in shown and "row" in shown and "|" in piped  # the bar on stderr, the table on stdout
    rc, shown, piped = _run(["evaluate", model, str(synth_corpus), "--batch-size", "4", "--quiet"], tty_stdout=False)
    assert rc == 0 and "evaluate:" not in shown and "| text+audio |" in piped


def test_evaluate_json_has_per_class_scores_and_confusion(model, synth_corpus, capsys):
    from sklearn.metrics import precision_recall_fscore_support

    assert main(["evaluate", model, str(synth_corpus), "--json"]) == 0
    out = capsys.readouterr()
    assert "evaluate:" not in out.err  # not a terminal: no progress bar
    results = json.loads(out.out)
    assert set(results) == {"both", "text", "audio"}
    for cond, m in results.items():
        labels = m["labels"]
        matrix = m["confusion"]
        assert len(matrix) == len(labels) and sum(map(sum, matrix)) == m["n"]
        assert set(m["per_class"]) == set(labels)
        # recompute from the confusion matrix: gold rows, predicted columns
        y_true = [i for i, row in enumerate(matrix) for j, count in enumerate(row) for _ in range(count)]
        y_pred = [j for row in matrix for j, count in enumerate(row) for _ in range(count)]
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(len(labels)), zero_division=0)
        for i, label in enumerate(labels):
            got = m["per_class"][label]
            assert got["support"] == s[i] and got["precision"] == pytest.approx(p[i]), (cond, label)
            assert got["recall"] == pytest.approx(r[i]) and got["f1"] == pytest.approx(f[i]), (cond, label)
        assert m["wa"] == pytest.approx(sum(matrix[i][i] for i in range(len(labels))) / m["n"])
