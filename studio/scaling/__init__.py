"""Test-time scaling and step values: verifiers that pick among K outputs
(:mod:`~studio.scaling.verifiers`, registered in :mod:`~studio.scaling.verifier_registry`), Monte
Carlo step values (:mod:`~studio.scaling.values`), the model judge (:mod:`~studio.scaling.judge`)
and best-of-K coverage (:mod:`~studio.scaling.coverage`)."""
