"""Results where teams keep them: a sweep's per-episode and per-arm metrics and a campaign's statistics
as tables (CSV, Parquet) and in experiment trackers (MLflow, W&B, trackio), with links back to the
episodes in the studio."""
