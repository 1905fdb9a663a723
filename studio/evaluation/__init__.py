"""Comparing models and settings: sweeps (:mod:`~studio.evaluation.sweep`), result tables and paired
tests (:mod:`~studio.evaluation.compare`), cross-scoring an episode under another model
(:mod:`~studio.evaluation.crossscore`), and every statistic the studio shows
(:mod:`~studio.evaluation.stats`)."""
