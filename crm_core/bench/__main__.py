"""``python -m crm_core.bench``: see :mod:`crm_core.bench.cli`."""
import sys

from crm_core.bench.cli import cli

sys.exit(cli())
