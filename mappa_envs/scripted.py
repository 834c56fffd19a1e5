r"""Scripted teams: deterministic agents written by hand, for demos, tests and sanity checks of an env.

They read only what a model would read (the observation's messages) and act through the same API, so a scripted
team exercises the whole pipeline: prompts, code execution in the workspace, hand-offs, grading. They are not
clever: the arithmetic team translates simple questions ("What is 7 + 5?", "… remainder when 22 is divided by 5")
into Python for the coder to run, and fails honestly on anything else.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from mappa_envs.records import ActionRecord, FileInfo, Message

Team = Callable[[str, list[Message]], str]

_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(r"remainder when (\d+) is divided by (\d+)"), lambda m: f"{m[1]} % {m[2]}"),
    (re.compile(r"(\d+) squared"), lambda m: f"{m[1]} ** 2"),
    (re.compile(r"(\d+) cubed"), lambda m: f"{m[1]} ** 3"),
    (re.compile(r"(\d+) to the power of (\d+)"), lambda m: f"{m[1]} ** {m[2]}"),
    (re.compile(r"(\d+) times (\d+)"), lambda m: f"{m[1]} * {m[2]}"),
    (re.compile(r"greatest common divisor of (\d+) and (\d+)"), lambda m: f"math.gcd({m[1]}, {m[2]})"),
    (re.compile(r"least common multiple of (\d+) and (\d+)"), lambda m: f"math.lcm({m[1]}, {m[2]})"),
    (re.compile(r"What is ([\d\s+\-*/()]+)\?"), lambda m: m[1].strip()),
]


def problem_text(messages: list[Message]) -> str:
    user = next(m["content"] for m in messages if m["role"] == "user")
    match = re.search(r"## Problem\n(.*?)(?:\n\n#|\Z)", user, re.DOTALL)
    return match.group(1) if match else user


def translate(problem: str) -> str | None:
    """A Python expression for a simple arithmetic question, or None."""
    for pattern, build in _RULES:
        m = pattern.search(problem)
        if m:
            return build(m)
    return None


def _last_number(text: str) -> str | None:
    numbers = re.findall(r"-?\d+", text)
    return numbers[-1] if numbers else None


def arithmetic_team() -> Team:
    """Solver frames the question, coder computes it in the kernel, verifier boxes what the code printed."""

    def act(agent: str, messages: list[Message]) -> str:
        problem = problem_text(messages)
        expr = translate(problem)
        if agent == "solver":
            if expr is None:
                return "I do not know how to set this problem up."
            return f"The question asks for `{expr}`. The Code Executor should compute it exactly."
        if agent == "coder":
            if messages[-1]["role"] == "tool":  # second turn: report what the code printed
                number = _last_number(messages[-1]["content"])
                return (
                    f"The code printed {number}, so the answer is \\boxed{{{number}}}."
                    if number
                    else "No result."
                )
            if expr is None:
                return "I cannot translate this problem into code."
            return f"```python\nimport math\nprint({expr})\n```"
        # verifier (or judge): trust the last number the code printed
        user = messages[1]["content"]
        outputs = re.findall(r"### Output of the code above\n(.*?)(?:\n## |\Z)", user, re.DOTALL)
        number = _last_number(outputs[-1]) if outputs else None
        if number is None:
            return "Nobody computed an answer, and I cannot decide."
        return f"The Code Executor's computation gives {number}. Final answer: \\boxed{{{number}}}"

    return act


def _compute(expr: str) -> str | None:
    """The value of one of :func:`translate`'s expressions, or None (a debater has no kernel: it works it out)."""
    if len(expr) > 60 or expr.count("**") > 1:
        return None  # not a simple question; a tower of powers would stall the team
    try:
        value = eval(expr, {"__builtins__": {}, "math": math})  # noqa: S307 - translate() built it from digits
    except (ArithmeticError, SyntaxError, TypeError, ValueError):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def debate_team() -> Team:
    """Debaters work the arithmetic out themselves and box it; the judge boxes the debaters' majority answer."""

    def act(agent: str, messages: list[Message]) -> str:
        if agent != "judge":
            expr = translate(problem_text(messages))
            value = _compute(expr) if expr is not None else None
            if value is None:
                return "I cannot work this problem out."
            return f"Computing `{expr}` gives {value}, so the answer is \\boxed{{{value}}}."
        seen = "\n".join(m["content"] for m in messages if m["role"] != "system")
        answers = [a for a in re.findall(r"\\boxed\{([^{}]+)\}", seen) if a.strip() != "answer"]
        if not answers:
            return "No debater gave an answer, and I cannot decide."
        best, _ = Counter(answers).most_common(1)[0]
        return f"Most debaters argue for {best}. Final answer: \\boxed{{{best}}}"

    return act


_DE_CODE = """import pandas as pd
train = pd.read_csv("train.csv")
test = pd.read_csv("test.csv")
id_col = pd.read_csv("sample_submission.csv").columns[0]
targets = [c for c in train.columns if c not in test.columns]
features = [c for c in test.columns if c != id_col]
X_train, X_test = train[features].copy(), test[features].copy()
categorical = [c for c in features if not pd.api.types.is_numeric_dtype(X_train[c])]
keep = [c for c in categorical if X_train[c].nunique() <= 20]
drop = [c for c in categorical if c not in keep]
X_train, X_test = X_train.drop(columns=drop), X_test.drop(columns=drop)
numeric = [c for c in X_train.columns if c not in keep]
medians = X_train[numeric].median()
X_train[numeric] = X_train[numeric].fillna(medians)
X_test[numeric] = X_test[numeric].fillna(medians)
X_train = pd.get_dummies(X_train, columns=keep, dummy_na=True, dtype=float)
X_test = pd.get_dummies(X_test, columns=keep, dummy_na=True, dtype=float).reindex(columns=X_train.columns, fill_value=0.0)
saved = {"X_train.pkl": X_train, "y_train.pkl": train[targets], "X_test.pkl": X_test}
for name, frame in saved.items():
    if name not in FORGET:
        frame.to_pickle(name)
print("targets:", targets, "| X_train", X_train.shape, "| X_test", X_test.shape, "| dropped:", drop)
"""

_MODELER_CODE = """import pickle
import pandas as pd
from sklearn import ensemble
from sklearn.model_selection import cross_val_score
X = pd.read_pickle("X_train.pkl")
y = pd.read_pickle("y_train.pkl")
if y.shape[1] == 1:  # gradient boosting for one target, a random forest handles several at once
    y = y.iloc[:, 0]
    Model = ensemble.HistGradientBoostingClassifier if CLASSIFICATION else ensemble.HistGradientBoostingRegressor
    model = Model(random_state=0)
else:
    Model = ensemble.RandomForestClassifier if CLASSIFICATION else ensemble.RandomForestRegressor
    model = Model(n_estimators=150, min_samples_leaf=2, random_state=0, n_jobs=1)
print("3-fold CV score:", round(cross_val_score(model, X, y, cv=3).mean(), 4))
model.fit(X, y)
with open("model.pkl", "wb") as f:
    pickle.dump(model, f)
print("saved model.pkl")
"""

_ANALYST_CODE = """import pickle
import numpy as np
import pandas as pd
with open("model.pkl", "rb") as f:
    model = pickle.load(f)
X = pd.read_pickle("X_test.pkl")
test = pd.read_csv("test.csv")
sample = pd.read_csv("sample_submission.csv")
id_col, cols = sample.columns[0], list(sample.columns[1:])
sub = pd.DataFrame({id_col: test[id_col]})
if MODE == "proba":
    proba = model.predict_proba(X)
    classes = [str(c) for c in model.classes_]
    if len(cols) == 1:
        sub[cols[0]] = proba[:, -1]
    else:
        for c in cols:
            sub[c] = proba[:, classes.index(c)]
elif MODE == "top3":
    order = np.argsort(-model.predict_proba(X), axis=1)[:, :3]
    sub[cols[0]] = [" ".join(str(model.classes_[j]) for j in row) for row in order]
else:
    pred = model.predict(X)
    sub[cols] = pred.reshape(len(sub), -1)
sub.to_csv("submission.csv", index=False)
print(sub.shape)
print(sub.head())
"""

_CLASSIFICATION_WORDS = ("accuracy", "f1", "roc", "log loss", "kappa", "average precision", "label")


def _evaluation_text(messages: list[Message]) -> str:
    user = next(m["content"] for m in messages if m["role"] == "user")
    match = re.search(r"## Evaluation\n(.*?)(?:\n## |\Z)", user, re.DOTALL)
    return (match.group(1) if match else user).lower()


def _classification(evaluation: str) -> bool:
    return any(w in evaluation for w in _CLASSIFICATION_WORDS)


def _submission_mode(evaluation: str) -> str:
    if "precision at 3" in evaluation:
        return "top3"
    return "proba" if ("log loss" in evaluation or "roc" in evaluation) else "values"


def _role_code(agent: str, evaluation: str, forget: tuple[str, ...] = ()) -> str:
    """The scripted role's code (one self-contained block body), set up from the task's evaluation text."""
    if agent == "data_engineer":
        return f"FORGET = {tuple(forget)!r}\n{_DE_CODE}"
    if agent == "modeler":
        return f"CLASSIFICATION = {_classification(evaluation)}\n{_MODELER_CODE}"
    return f"MODE = {_submission_mode(evaluation)!r}\n{_ANALYST_CODE}"


def data_science_team(forget: tuple[str, ...] = ()) -> Team:
    """A competent, plain DSBench team: one-hot + median imputation → gradient boosting → submission.

    It reads the target from the CSV headers and the metric from the description, as an agent would.
    ``forget`` lists files the data engineer "forgets" to save (the credit-assignment story: the crash then
    happens downstream, at the analyst).
    """

    def act(agent: str, messages: list[Message]) -> str:
        if messages[-1]["role"] == "tool":  # a later turn: report and hand over (or give up on an error)
            output = messages[-1]["content"]
            if "[error]" in output:
                return f"My code failed ({output.splitlines()[-1]}); I cannot complete my part."
            return "Done: my files are saved in the workspace. Handing over."
        evaluation = _evaluation_text(messages)
        intro = {
            "data_engineer": "I will prepare the features.",
            "modeler": "I will train a tree ensemble.",
        }.get(agent, "I will write the submission.")
        return f"{intro}\n```python\n{_role_code(agent, evaluation, forget)}```"

    return act


# what each DSBench role must leave, in pipeline order (the corrector rebuilds what an earlier role left missing)
_DS_CHAIN: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("data_engineer", ("X_train.pkl", "y_train.pkl", "X_test.pkl")),
    ("modeler", ("model.pkl",)),
    ("analyst", ("submission.csv",)),
)
_DS_NEEDS: dict[str, tuple[str, ...]] = {
    "data_engineer": (),
    "modeler": ("X_train.pkl", "y_train.pkl"),
    "analyst": ("model.pkl", "X_test.pkl"),
}


def _has(files: Sequence[FileInfo], name: str) -> bool:
    return any(f.name.replace("\\", "/").rsplit("/", 1)[-1] == name and f.size > 0 for f in files)


def data_science_correction(record: ActionRecord, role: Any, episode: Sequence[ActionRecord]) -> str | None:
    """The DSBench :data:`~mappa_envs.pipeline.Corrector`: the scripted competent role's code for this task,
    for an action that fell short (its code failed, it wrote no code on its first turn, or it ended its part
    without its files).

    Adapted to what the workspace held before the action: when a file this role reads is missing, the code of the
    earlier role that should have left it comes first, so the correction runs as it stands. It is built from the
    agent's own observation (the task's evaluation text) and the workspace's file names only: it never holds or
    computes a test label.
    """
    agent = record.role
    if agent not in _DS_NEEDS:
        return None
    required = tuple(getattr(role, "required_artifacts", ()) or dict(_DS_CHAIN)[agent])
    no_code = not record.tool_results and record.turn == 0
    missing_own = record.ends_turn and not all(_has(record.files_after, a) for a in required)
    if not (record.had_error or no_code or missing_own):
        return None
    evaluation = _evaluation_text(record.observation)
    have = {f for _, files in _DS_CHAIN for f in files if _has(record.files_before, f)}
    needed, order = set(_DS_NEEDS[agent]), [name for name, _ in _DS_CHAIN]
    steps: list[str] = []
    for name in reversed(order[: order.index(agent)]):  # walk upstream: who must redo their part first
        made = dict(_DS_CHAIN)[name]
        if needed & set(made) - have:
            steps.insert(0, name)
            needed |= set(_DS_NEEDS[name])
    steps.append(agent)
    code = "\n".join(_role_code(name, evaluation) for name in steps)
    redo = [dict(_DS_CHAIN)[name] for name in steps[:-1]]
    why = (
        f" The workspace lacks {', '.join(f for files in redo for f in files if f not in have)}, so I rebuild it first."
        if redo
        else ""
    )
    return f"I will do my part with code that saves my files.{why}\n```python\n{code}```"


SCRIPTED_TEAMS: dict[str, Callable[[], Team]] = {
    "math-chat": arithmetic_team,
    "math-debate": debate_team,
    "dsbench-3agent": data_science_team,
}


def scripted_team(pipeline: str) -> Team:
    """The scripted team for a pipeline name (e.g. ``"math-chat"``)."""
    try:
        return SCRIPTED_TEAMS[pipeline]()
    except KeyError:
        raise KeyError(f"no scripted team for {pipeline!r}; available: {sorted(SCRIPTED_TEAMS)}") from None
