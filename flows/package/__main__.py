"""``python -m genreflow``: the same command line as ``genreflow``, for environments without its script."""

import sys

from genreflow.flows.cli import main

sys.exit(main())
