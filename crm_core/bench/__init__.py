"""Moved to :mod:`crm_core.experiments.bench` (see :mod:`crm_core.moved`)."""
import sys

from crm_core.moved import tombstone

# While ``python -m crm_core.bench[.X]`` locates its module, sys.argv[0] is "-m" (the docs of -m).
tombstone("crm_core.bench", run_as_main=sys.argv[:1] == ["-m"])
