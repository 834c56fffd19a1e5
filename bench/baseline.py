"""Load another commit's ``TeamPolicy`` (``git show REF:mappa_train/policy.py``) to time it against this tree's.

The old module is written to a temporary file and imported under its own name, so both classes live in one
process and run the same model, prompts and seeds: a before/after ratio from one run, no second checkout. It
imports the rest of ``mappa_train`` from this tree, so it works while the modules it needs
(``mappa_train.logprobs``, ``mappa_train.types``) keep the names it uses.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def policy_class(ref: str) -> type:
    """``TeamPolicy`` as it is at git revision ``ref`` (e.g. ``main``)."""
    try:
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{ref}:mappa_train/policy.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except subprocess.CalledProcessError as e:
        raise SystemExit(
            f"--baseline-ref {ref}: git show failed ({e.stderr.strip()}); pass a branch or commit"
        ) from e
    name = f"mappa_baseline_policy_{abs(hash(ref))}"
    path = Path(tempfile.mkdtemp(prefix="mappa-baseline-")) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module.TeamPolicy
