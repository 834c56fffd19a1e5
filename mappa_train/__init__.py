"""mappa_train: train every agent of a team with per-action rewards (REINFORCE++ and baselines).

One base causal LM with one LoRA adapter per role by default; rollouts run B episodes of a mappa env in lockstep;
algorithms are pure functions over samples (one sample = one action).
"""

from mappa_envs import __version__

__all__ = ["__version__"]
