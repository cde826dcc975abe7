"""Progress bars on a terminal only: in a log file, a pipe or CI every redraw of a bar is one more line of noise.

`progress_bar` is the one way mmemo draws a bar; `quiet_library_bars` turns Hugging Face's own bars ("Loading
weights", "Writing model shards", downloads) off when stderr is not a terminal (the CLI calls it first).
"""

from __future__ import annotations

import os
import sys


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs):
    """A tqdm bar, drawn only when `enabled` and stderr is a terminal (or in a notebook, as a widget).

    Args:
        iterable: what to iterate over, as `tqdm(iterable)`; None for a bar updated by hand.
        enabled: False never draws (e.g. `train.progress: false`, `--quiet`, a process other than rank 0).
        kwargs: passed to tqdm (desc, unit, total, leave, ...).
    """
    from tqdm.auto import tqdm

    if not enabled:
        disable = True
    elif tqdm.__module__ == "tqdm.notebook":
        disable = False  # tqdm.auto chose a notebook widget: one widget, not redraws
    else:
        disable = None  # tqdm's rule: off when its file (stderr) is not a terminal
    return tqdm(iterable, disable=disable, **kwargs)


def quiet_library_bars() -> None:
    """Hugging Face's progress bars off when stderr is not a terminal; on a terminal they stay as they are.

    huggingface_hub reads HF_HUB_DISABLE_PROGRESS_BARS when it is imported (and transformers follows it); a value the
    user set is kept. Libraries imported already are switched off directly.
    """
    if sys.stderr.isatty():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"].lower() not in ("1", "true", "yes", "on"):
        return
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging

        logging.disable_progress_bar()
