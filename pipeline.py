#!/usr/bin/env python
"""Entry point: `python pipeline.py --constitution safety.yaml`. See README.md."""

import sys

from rlaif.cli import main

if __name__ == "__main__":
    sys.exit(main())
