"""On-disk cache of coach answers: one JSON file per prompt hash, written atomically.

A coach model at temperature 0 gives the same answer to the same prompt, and coach calls are the slow, paid part
of a training step, so a rerun (resume, ablation, evaluation of the same episodes) should not pay twice. Files
are written to a temporary name and renamed, so a crash or a concurrent writer never leaves half a file; an
unreadable file is treated as a miss. Only real model answers are stored; fallbacks never are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mappa/coach``, else ``~/.cache/mappa/coach``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mappa" / "coach"


def cache_key(model: str, messages: Sequence[dict[str, str]], temperature: float) -> str:
    """sha256 over the model, the (mode-independent) prompt messages and the temperature."""
    payload = json.dumps(
        {"v": CACHE_VERSION, "model": model, "messages": list(messages), "temperature": float(temperature)},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgementCache:
    """Key → small JSON payload, stored as ``<root>/<key[:2]>/<key>.json``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored payload, or None if absent or unreadable (a corrupt entry is logged and ignored)."""
        path = self.path(key)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.warning("coach cache: ignoring unreadable entry %s (%s)", path, e)
            return None
        if not isinstance(data, dict) or data.get("v") != CACHE_VERSION:
            return None
        return data

    def put(self, key: str, payload: dict[str, Any]) -> None:
        """Write atomically (temporary file in the same folder, then rename); errors are logged, not raised."""
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:8]}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump({"v": CACHE_VERSION, **payload}, f, ensure_ascii=False, sort_keys=True)
                os.replace(tmp, path)
            except BaseException:
                with suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as e:
            log.warning("coach cache: could not write %s (%s); continuing without caching it", path, e)
