"""Bridges from mappa's envs to other RL libraries' trainers (:mod:`.trl`: TRL's ``GRPOTrainer``)."""
