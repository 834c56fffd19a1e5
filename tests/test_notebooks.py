"""The teaching notebooks (``notebooks/*.ipynb``) run end to end and still show what their text says.

Each notebook is executed with nbclient in a kernel started from *this* interpreter (the venv's python, through a
kernelspec written for the test, so no other kernelspec on the machine can be picked up), from the ``notebooks/``
folder, as a reader would run it. Any cell error fails the test; then a few key outputs are checked.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT_S = 300
PROBE = "import sys; print('KERNEL', sys.executable, sys.prefix, sep='|')"

pytestmark = pytest.mark.slow


def _kernel_manager(tmp_path: Path):
    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    spec = tmp_path / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"})
    )
    ksm = KernelSpecManager(kernel_dirs=[str(spec.parent)])
    return KernelManager(kernel_name="python3", kernel_spec_manager=ksm)


def _text(cell) -> str:
    """Everything a code cell showed as text: streams and the text/plain of results and displays."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] in ("execute_result", "display_data"):
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def _images(nb) -> int:
    return sum(
        "image/png" in out.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
    )


def run_notebook(name: str, tmp_path: Path, monkeypatch) -> tuple[object, str]:
    """Execute ``notebooks/<name>`` (not saved); returns the executed notebook and all its text output."""
    monkeypatch.delenv("MAPPA_NOTEBOOK_REAL_MODEL", raising=False)  # the quick defaults, as in CI
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and "What you will learn" in nb.cells[0].source
    assert nb.cells[-1].cell_type == "markdown" and "What to try next" in nb.cells[-1].source
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    before = sorted(p.name for p in NOTEBOOKS.iterdir())
    client = nbclient.NotebookClient(
        nb,
        km=_kernel_manager(tmp_path),
        timeout=CELL_TIMEOUT_S,
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()  # raises CellExecutionError (with the traceback) on the first failing cell
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o["output_type"] == "error"]
    assert not errors, errors
    assert sorted(p.name for p in NOTEBOOKS.iterdir()) == before, "a notebook wrote into notebooks/"
    _, executable, prefix = _text(nb.cells[-1]).strip().split("|")
    assert Path(executable) == Path(sys.executable) and Path(prefix) == Path(sys.prefix)
    text = "\n".join(_text(c) for c in nb.cells if c.cell_type == "code")
    return nb, text


def test_kernel_is_this_interpreter_and_the_venv(tmp_path, monkeypatch):
    """The kernel the notebook tests start is this python; under `make test` that is the repo's .venv."""
    venv = REPO / ".venv"
    if venv.is_dir() and Path(sys.prefix).resolve() != venv.resolve():
        pytest.skip(f"tests run outside {venv} (sys.prefix={sys.prefix})")
    seen: list[dict] = []
    km = _kernel_manager(tmp_path)
    km.start_kernel(cwd=str(NOTEBOOKS))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        reply = kc.execute_interactive(PROBE, timeout=60, output_hook=lambda msg: seen.append(msg))
        assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    text = "".join(m["content"].get("text", "") for m in seen if m["msg_type"] == "stream")
    _, executable, prefix = text.strip().split("|")
    assert Path(executable) == Path(sys.executable)
    assert Path(prefix) == Path(sys.prefix)


def test_01_play_an_episode(tmp_path, monkeypatch):
    nb, text = run_notebook("01_play_an_episode.ipynb", tmp_path, monkeypatch)
    assert "OrderEnforcingWrapper\nCoachReward\nPipelineEnv" in text
    assert "outcome: {'correct': True" in text  # the scripted arithmetic team solves the task
    assert "files written ['remainder.txt (1 B)']" in text  # receipts list the file the coder wrote
    assert "ZeroDivisionError" in text  # and the error of the action that crashed
    assert "completion ids:" in text and "log-probs:" in text  # the model team ran through TeamPolicy


def test_02_credit_assignment(tmp_path, monkeypatch):
    nb, text = run_notebook("02_credit_assignment.ipynb", tmp_path, monkeypatch)
    assert "FileNotFoundError" in text and "X_test.pkl" in text
    # the point of the notebook: hindsight blames the data engineer, online the analyst, outcome nobody
    assert "hindsight coach: data_engineer" in text
    assert "online coach: analyst" in text
    assert "outcome: nobody in particular" in text
    table = next(_text(c) for c in nb.cells if c.cell_type == "code" and "MultiIndex" in c.source)
    hindsight = {
        line.split()[0]: float(line.split()[-3].rstrip(","))  # the hindsight reward column
        for line in table.splitlines()
        if line.split() and line.split()[0] in ("data_engineer", "modeler", "analyst")
    }
    assert min(hindsight, key=hindsight.get) == "data_engineer", hindsight
    assert "'success': True" in text  # the control team (nobody forgets) succeeds


def test_03_train_a_small_team(tmp_path, monkeypatch):
    nb, text = run_notebook("03_train_a_small_team.ipynb", tmp_path, monkeypatch)
    assert "held-out success before:" in text
    assert "metrics.jsonl" in text and "checkpoints: ['step-000001', 'step-000002']" in text
    assert _images(nb) >= 1  # the curves from plot_run


def test_04_bring_your_own_algorithm(tmp_path, monkeypatch):
    nb, text = run_notebook("04_bring_your_own_algorithm.ipynb", tmp_path, monkeypatch)
    assert _images(nb) >= 1
    summary = next(_text(c) for c in nb.cells if c.cell_type == "code" and c.source.startswith("summary ="))
    row = next(line for line in summary.splitlines() if line.startswith("P(all three right) at the end"))
    values = [float(v) for v in re.findall(r"\d+\.\d+", row)]
    assert len(values) == 3
    assert max(values) > 3 / 27  # some learner beat a team that picks at random (1/27 for all three right)


def test_05_train_one_role_with_trl(tmp_path, monkeypatch):
    pytest.importorskip("trl")
    nb, text = run_notebook("05_train_one_role_with_trl.ipynb", tmp_path, monkeypatch)
    assert "'mappa/math-chat-v2'" in text  # registered with Gymnasium
    assert "'success': True" in text  # the scripted coder through the single-agent view
    steps = re.findall(r"TRL logged reward (\d+\.\d+) \| env paid the coder .* \(mean (\d+\.\d+)\)", text)
    assert len(steps) == 2 and all(logged == paid for logged, paid in steps)
    assert "episodes played: 8" in text and "coder's return:" in text
