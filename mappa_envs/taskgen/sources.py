"""What the sandbox must hide because tasks are built from it: the dataset folders and mappa's private home.

Kept free of heavy imports: :mod:`mappa_envs.workspace.sandbox` reads it for every kernel it starts.
"""

from __future__ import annotations

import os

from mappa_envs.taskgen.secret import mappa_home

TASK_SOURCES: tuple[str, ...] = (
    # scikit-learn's bundled sets (iris, wine, breast cancer, digits, diabetes) and their descriptions
    "sklearn/datasets/data",
    "sklearn/datasets/descr",
    "sklearn/datasets/images",
    # scikit-learn's OpenML test fixtures hold iris (id 61) and other public tables, gzipped
    "sklearn/datasets/tests/data",
    # palmerpenguins ships its CSVs
    "palmerpenguins/data",
    # scipy's test data hold copies of iris (spatial: iris.txt and distance matrices of it; io: iris.arff)
    "scipy/spatial/tests/data",
    "scipy/io/arff/tests/data",
)
"""Data folders, relative to a ``site-packages`` folder, that the embedded DSBench tasks are built from or that
hold copies of those tables (see :mod:`mappa_envs.taskgen.dsbench_gen`): with them, agent code could look the
test rows' targets up. The sandbox masks each of them in every ``site-packages`` it binds."""


def hidden_host_paths() -> tuple[str, ...]:
    """Absolute host paths to mask in the sandbox: mappa's home (the task secret and the generated tasks with
    their answers). Read at every kernel start, so a changed ``$MAPPA_HOME`` is honoured; a home that does not
    exist yet holds nothing to hide (and a mount point cannot be made inside a read-only bind)."""
    home = os.path.realpath(mappa_home())
    return (home,) if os.path.isdir(home) else ()
