"""Moved to :mod:`crm_core.experiments.results` (see :mod:`crm_core.moved`)."""
from crm_core.moved import tombstone

tombstone("crm_core.results", run_as_main=__name__ == "__main__")
