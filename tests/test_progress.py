"""Progress bars: drawn on a terminal only, never when switched off; Hugging Face's bars off in a log."""

import io
import sys

from mmemo.progress import progress_bar, quiet_library_bars


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_bar_draws_on_a_terminal_only_and_never_when_switched_off(monkeypatch):
    log = io.StringIO()  # a file or a pipe
    assert list(progress_bar(range(3), file=log, desc="x")) == [0, 1, 2] and log.getvalue() == ""
    terminal = Terminal()
    assert list(progress_bar(range(3), file=terminal, desc="x", mininterval=0)) == [0, 1, 2]
    assert "x: 100%" in terminal.getvalue()
    terminal = Terminal()
    assert list(progress_bar(range(3), enabled=False, file=terminal, desc="x")) == [0, 1, 2]
    assert terminal.getvalue() == ""  # train.progress: false wins on a terminal too
    monkeypatch.setattr("sys.stderr", Terminal())  # the default file is stderr, looked up when the bar starts
    bar = progress_bar(total=2, desc="by hand")
    bar.update(2)
    bar.close()
    assert "by hand: 100%" in sys.stderr.getvalue()


def test_hugging_face_bars_go_off_when_stderr_is_not_a_terminal(monkeypatch):
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    try:
        quiet_library_bars()
        assert are_progress_bars_disabled() and not logging.is_progress_bar_enabled()
    finally:
        enable_progress_bars()
        logging.enable_progress_bar()
    monkeypatch.setattr("sys.stderr", Terminal())
    quiet_library_bars()  # on a terminal nothing changes
    assert not are_progress_bars_disabled() and logging.is_progress_bar_enabled()
