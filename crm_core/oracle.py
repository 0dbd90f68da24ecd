"""Moved to :mod:`crm_core.experiments.oracle` (see :mod:`crm_core.moved`)."""
from crm_core.moved import tombstone

tombstone("crm_core.oracle", run_as_main=__name__ == "__main__")
