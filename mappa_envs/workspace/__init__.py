"""Per-episode workspaces: a folder and a persistent IPython kernel with per-cell limits."""

from mappa_envs.workspace.kernel import CellLimits, Kernel, KernelError
from mappa_envs.workspace.workspace import Workspace

__all__ = ["CellLimits", "Kernel", "KernelError", "Workspace"]
