"""``python -m crm_core.experiments.bench``: see :mod:`crm_core.experiments.bench.cli`."""
import sys

from crm_core.experiments.bench.cli import cli

sys.exit(cli())
