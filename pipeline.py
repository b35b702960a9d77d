#!/usr/bin/env python
"""Entry point in the repository: `python pipeline.py ...` is the installed `rlaif ...` command. See README.md."""

import sys

from rlaif.cli import main

if __name__ == "__main__":
    sys.exit(main())
