"""Moved to :mod:`crm_core.experiments.recipe_sweep` (see :mod:`crm_core.moved`)."""
from crm_core.moved import tombstone

tombstone("crm_core.recipe_sweep", run_as_main=__name__ == "__main__")
