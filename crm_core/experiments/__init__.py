"""The studies: what CRM Lab measured with its library, and how.

The library (``crm_core``: data, models, CAMs, losses, training, evaluation, pseudo masks,
stage 2, the API) trains and scores one model at a time. The studies run it many times and
read the numbers: the multi-seed results table (``results`` runs it, ``results_jobs`` its jobs
that train no CAM model, ``results_table`` says what it is, ``results_summary`` sums its jobs up,
``results_report`` says what it says), the maps that come from no model
(``baselines``), the oracle that measures how much a benchmark's cue gives away (``oracle``),
the recipe sweeps on val (``recipe_sweep``) and the benchmarks (``bench``). A study imports the
library; the library never imports a study (``tests/test_layering.py``).
"""
