import sys

from mmemo.cli import main

sys.exit(main())
