"""Training from the store: a step-level Q-value model (a reward model) and the policy itself (DPO, KTO,
SFT), with TRL's trainers on exactly the rows ``export`` writes; trained models registered by name."""
