"""The core: episodes, sessions, values, verifiers, coverage, sweeps and comparisons, jobs."""
