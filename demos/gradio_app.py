"""The mmemo voice demo as a script: `python demos/gradio_app.py [--model DIR] [--asr MODEL] ...`.

The same as `mmemo demo` (see `mmemo demo --help` for the options); the app itself is `mmemo.demo.build_demo`.
"""

import sys

from mmemo.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
