"""`python -m raftorch`: the `raftorch` command."""

import sys

from raftorch.ops.cli import main

sys.exit(main())
