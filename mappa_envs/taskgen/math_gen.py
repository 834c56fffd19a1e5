"""Generate the embedded math splits: ``python -m mappa_envs.taskgen.math_gen --out tasks/math``.

The one-step splits (``embedded:one-step-train`` / ``embedded:one-step-eval``: level-1 addition, multiplication and
word problems: one-step problems the untrained 135M team solves at least sometimes, docs/RESULTS.md round 2) are
``python -m mappa_envs.taskgen.math_gen --out tasks/math --prefix one-step- --levels 1
--families addition,multiplication,word_problem --n-train 96 --n-eval 48``.

Ten problem families at four levels. Level 1 is trivially easy ("What is 7 + 5?") so that an untrained 135M team
starts above 0% success and outcome rewards carry signal; levels 3-4 involve numbers where running Python pays off.
Every answer is an exact integer. Each record keeps ``meta.params`` (the operands) and ``meta.expr`` (a Python
expression for the answer), so tests can re-derive answers. Output is a pure function of the seed; train and eval
share no problem text and no (family, operands), and both cover every (family, level) cell.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUFFIX = "Put your final answer in \\boxed{}."
LEVELS = (1, 2, 3, 4)
DEFAULT_N_TRAIN = 320
DEFAULT_N_EVAL = 160

NAMES = ["Alice", "Ben", "Carla", "David", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jamal", "Kira", "Leo"]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "stamps", "shells", "cards"]
WORDS = ["BANANA", "LETTER", "COFFEE", "BALLOON", "PEPPER", "MISSISSIPPI", "STATISTICS", "COMMITTEE",
         "BOOKKEEPER", "ASSESSMENT", "TENNESSEE", "PARALLEL", "REFERENCE", "SUCCESS", "GRAMMAR"]  # fmt: skip


@dataclass(frozen=True)
class Problem:
    """One generated problem before it gets an id: text (without the answer-format suffix) and its answer."""

    text: str
    answer: int
    params: dict[str, Any]
    expr: str


def _lin(coef: int, var: str = "x") -> str:
    """``3x``, ``x``, ``-x``: a linear term as people write it."""
    return {1: var, -1: f"-{var}"}.get(coef, f"{coef}{var}")


def _plus(n: int) -> str:
    """`` + 5`` / `` - 5``: a constant appended to an expression."""
    return f" + {n}" if n >= 0 else f" - {-n}"


def _signed_sum(terms: list[int]) -> str:
    return str(terms[0]) + "".join(_plus(t) for t in terms[1:])


def addition(rng: random.Random, level: int) -> Problem:
    if level == 1:
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        return Problem(f"What is {a} + {b}?", a + b, {"terms": [a, b]}, f"{a} + {b}")
    if level == 2:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if rng.random() < 0.5:
            a, b = max(a, b), -min(a, b)
        terms = [a, b]
        return Problem(f"What is {_signed_sum(terms)}?", sum(terms), {"terms": terms}, _signed_sum(terms))
    count, lo, hi = (3, 100, 999) if level == 3 else (5, 1000, 9999)
    while True:
        terms = [rng.randint(lo, hi)] + [rng.choice((1, -1)) * rng.randint(lo, hi) for _ in range(count - 1)]
        if level == 4 or sum(terms) > 0:
            break
    return Problem(f"Compute {_signed_sum(terms)}.", sum(terms), {"terms": terms}, _signed_sum(terms))


def multiplication(rng: random.Random, level: int) -> Problem:
    ranges = {
        1: [(2, 9), (2, 9)],
        2: [(11, 99), (2, 9)],
        3: [(11, 99), (11, 99)],
        4: [(100, 999), (100, 999), (11, 99)],
    }
    f = [rng.randint(lo, hi) for lo, hi in ranges[level]]
    expr = " * ".join(map(str, f))
    if level == 4:
        text = f"What is the product of {f[0]}, {f[1]} and {f[2]}?"
    else:
        text = f"What is {f[0]} times {f[1]}?"
    return Problem(text, math.prod(f), {"factors": f}, expr)


def word_problem(rng: random.Random, level: int) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    if level == 1:
        if rng.random() < 0.5:
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            text = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
            return Problem(text, a + b, {"kind": "more", "a": a, "b": b}, f"{a} + {b}")
        a = rng.randint(2, 9)
        b = rng.randint(1, a - 1)
        text = f"{name} has {a} {item} and gives {b} of them away. How many {item} does {name} have left?"
        return Problem(text, a - b, {"kind": "away", "a": a, "b": b}, f"{a} - {b}")
    if level == 2:
        k, n = rng.randint(6, 24), rng.randint(2, 9)
        g = rng.randint(1, k * n - 1)
        text = (
            f"A box holds {k} {item}. {name} buys {n} boxes and then gives away {g} {item}. "
            f"How many {item} does {name} have left?"
        )
        return Problem(text, k * n - g, {"k": k, "n": n, "g": g}, f"{k} * {n} - {g}")
    if level == 3:
        p, q = rng.randint(4, 15), rng.randint(1, 3)
        x, y = rng.randint(5, 25), rng.randint(5, 40)
        cost = p * x + q * y
        paid = (cost // 100 + 1 + rng.randint(0, 2)) * 100
        text = (
            f"Notebooks cost {p} dollars each and pens cost {q} dollars each. {name} buys {x} notebooks and "
            f"{y} pens and pays with {paid} dollars. How much change, in dollars, does {name} get back?"
        )
        return Problem(
            text,
            paid - cost,
            {"p": p, "q": q, "x": x, "y": y, "paid": paid},
            f"{paid} - ({p} * {x} + {q} * {y})",
        )
    if rng.random() < 0.5:
        r, d, c = rng.randint(120, 999), rng.randint(11, 60), rng.randint(7, 48)
        text = (
            f"A factory makes {r} widgets every day for {d} days. The widgets are packed into crates of {c}, "
            "and only full crates are shipped. How many widgets are left unshipped?"
        )
        return Problem(text, r * d % c, {"kind": "crates", "r": r, "d": d, "c": c}, f"({r} * {d}) % {c}")
    b, n, m = rng.randint(500, 5000), rng.randint(20, 90), rng.randint(1, 19)
    w, k = rng.randint(5, 52), rng.randint(3, 12)
    total = b + (n - m) * w
    text = (
        f"A library has {b} books. Every week it buys {n} new books and {m} books are lost. After {w} weeks, "
        f"all its books are shared equally among {k} branches, and any books left over go into storage. "
        "How many books does each branch get?"
    )
    params = {"kind": "library", "b": b, "n": n, "m": m, "w": w, "k": k}
    return Problem(text, total // k, params, f"({b} + ({n} - {m}) * {w}) // {k}")


def sequence_sum(rng: random.Random, level: int) -> Problem:
    if level == 1:
        s, n = rng.randint(1, 9), rng.randint(3, 5)
        terms = list(range(s, s + n))
        text = "What is " + " + ".join(map(str, terms)) + "?"
        return Problem(text, sum(terms), {"start": s, "count": n}, " + ".join(map(str, terms)))
    if level == 2:
        a = rng.randint(1, 20)
        b = a + rng.randint(10, 40)
        text = f"What is the sum of all the integers from {a} to {b}, inclusive?"
        return Problem(text, (a + b) * (b - a + 1) // 2, {"a": a, "b": b}, f"sum(range({a}, {b} + 1))")
    if level == 3:
        a, d, n = rng.randint(1, 20), rng.randint(2, 9), rng.randint(12, 40)
        text = (
            f"What is the sum of the first {n} terms of the arithmetic sequence "
            f"{a}, {a + d}, {a + 2 * d}, {a + 3 * d}, ...?"
        )
        return Problem(
            text,
            n * (2 * a + (n - 1) * d) // 2,
            {"a": a, "d": d, "n": n},
            f"sum({a} + {d} * i for i in range({n}))",
        )
    if rng.random() < 0.5:
        n = rng.randint(25, 120)
        text = f"What is the sum of the squares of the integers from 1 to {n}?"
        return Problem(
            text,
            n * (n + 1) * (2 * n + 1) // 6,
            {"kind": "squares", "n": n},
            f"sum(i * i for i in range(1, {n} + 1))",
        )
    p, q = rng.sample([3, 4, 5, 6, 7, 11], 2)
    p, q = min(p, q), max(p, q)
    big = rng.randint(200, 3000)

    def multiples(k: int) -> int:
        m = (big - 1) // k
        return k * m * (m + 1) // 2

    answer = multiples(p) + multiples(q) - multiples(math.lcm(p, q))
    text = f"What is the sum of all positive integers less than {big} that are multiples of {p} or {q}?"
    expr = f"sum(i for i in range(1, {big}) if i % {p} == 0 or i % {q} == 0)"
    return Problem(text, answer, {"kind": "multiples", "p": p, "q": q, "below": big}, expr)


def modular(rng: random.Random, level: int) -> Problem:
    if level in (1, 2):
        a, m = (
            (rng.randint(10, 50), rng.randint(2, 9))
            if level == 1
            else (rng.randint(100, 999), rng.randint(6, 30))
        )
        text = f"What is the remainder when {a} is divided by {m}?"
        return Problem(text, a % m, {"a": a, "m": m}, f"{a} % {m}")
    if level == 3:
        a, b, m = rng.randint(100, 999), rng.randint(100, 999), rng.randint(7, 60)
        text = f"What is the remainder when {a} times {b} is divided by {m}?"
        return Problem(text, a * b % m, {"a": a, "b": b, "m": m}, f"({a} * {b}) % {m}")
    if rng.random() < 0.5:
        a, m = rng.randint(10**9, 10**13), rng.randint(11, 199)
        text = f"What is the remainder when {a} is divided by {m}?"
        return Problem(text, a % m, {"kind": "big", "a": a, "m": m}, f"{a} % {m}")
    while True:
        m1, m2 = rng.randint(3, 20), rng.randint(3, 20)
        if m1 < m2 and math.gcd(m1, m2) == 1:
            break
    r1, r2, low = rng.randint(1, m1 - 1), rng.randint(1, m2 - 1), rng.randint(100, 1000)
    x = next(x for x in range(low + 1, low + 1 + m1 * m2) if x % m1 == r1 and x % m2 == r2)
    text = (
        f"What is the smallest integer greater than {low} that leaves a remainder of {r1} when divided by {m1} "
        f"and a remainder of {r2} when divided by {m2}?"
    )
    expr = f"next(x for x in range({low} + 1, 10**9) if x % {m1} == {r1} and x % {m2} == {r2})"
    return Problem(text, x, {"kind": "crt", "m1": m1, "r1": r1, "m2": m2, "r2": r2, "low": low}, expr)


def power(rng: random.Random, level: int) -> Problem:
    if level == 1:
        kind = rng.choice(("squared", "cubed", "two"))
        b, e = {
            "squared": (rng.randint(2, 15), 2),
            "cubed": (rng.randint(2, 5), 3),
            "two": (2, rng.randint(4, 8)),
        }[kind]
        text = f"What is {b} {kind}?" if kind != "two" else f"What is 2 to the power of {e}?"
        return Problem(text, b**e, {"base": b, "exp": e}, f"{b} ** {e}")
    b, e, m = {
        2: (rng.randint(2, 9), rng.randint(5, 12), rng.randint(3, 13)),
        3: (rng.randint(2, 30), rng.randint(20, 99), rng.randint(7, 50)),
        4: (rng.randint(2, 99), rng.randint(100, 9999), rng.randint(101, 999)),
    }[level]
    text = f"What is the remainder when {b}^{e} is divided by {m}?"
    return Problem(text, pow(b, e, m), {"base": b, "exp": e, "mod": m}, f"pow({b}, {e}, {m})")


def counting(rng: random.Random, level: int) -> Problem:
    if level == 1:
        if rng.random() < 0.8:
            n = rng.randint(2, 20)
            text = f"There are {n} different {rng.choice(ITEMS)} in a bag. In how many ways can you pick exactly one of them?"
            return Problem(text, n, {"kind": "pick1", "n": n}, f"math.comb({n}, 1)")
        n = rng.randint(2, 3)
        text = f"In how many different orders can {n} friends stand in a line?"
        return Problem(text, math.factorial(n), {"kind": "line", "n": n}, f"math.factorial({n})")
    if level == 2:
        if rng.random() < 0.8:
            n = rng.randint(5, 25)
            text = f"{n} people meet, and every two of them shake hands exactly once. How many handshakes are there?"
            return Problem(text, math.comb(n, 2), {"kind": "pairs", "n": n}, f"math.comb({n}, 2)")
        n = rng.randint(4, 7)
        text = f"In how many ways can {n} different books be arranged in a row on a shelf?"
        return Problem(text, math.factorial(n), {"kind": "line", "n": n}, f"math.factorial({n})")
    if level == 3:
        if rng.random() < 0.6:
            n, k = rng.randint(10, 25), rng.randint(3, 6)
            text = f"In how many ways can a committee of {k} people be chosen from a group of {n} people?"
            return Problem(
                text, math.comb(n, k), {"kind": "committee", "n": n, "k": k}, f"math.comb({n}, {k})"
            )
        n = rng.randint(8, 30)
        text = (
            f"A club has {n} members. In how many ways can it choose a president, a vice-president and a "
            "treasurer, if no member can hold more than one office?"
        )
        return Problem(text, math.perm(n, 3), {"kind": "offices", "n": n}, f"math.perm({n}, 3)")
    if rng.random() < 0.7:
        a, b, k = rng.randint(5, 15), rng.randint(5, 15), rng.randint(4, 7)
        answer = math.comb(a + b, k) - math.comb(a, k) - math.comb(b, k)
        text = (
            f"A club has {a} men and {b} women. In how many ways can a committee of {k} be chosen so that it "
            "includes at least one man and at least one woman?"
        )
        expr = f"math.comb({a} + {b}, {k}) - math.comb({a}, {k}) - math.comb({b}, {k})"
        return Problem(text, answer, {"kind": "mixed", "men": a, "women": b, "k": k}, expr)
    word = rng.choice(WORDS)
    counts = [word.count(c) for c in sorted(set(word))]
    answer = math.factorial(len(word)) // math.prod(math.factorial(c) for c in counts)
    text = f"How many distinct arrangements of the letters of the word {word} are there?"
    expr = f"math.factorial({len(word)}) // (" + " * ".join(f"math.factorial({c})" for c in counts) + ")"
    return Problem(text, answer, {"kind": "word", "word": word}, expr)


def _coprime_pair(rng: random.Random, lo: int, hi: int) -> tuple[int, int]:
    while True:
        x, y = rng.randint(lo, hi), rng.randint(lo, hi)
        if x != y and math.gcd(x, y) == 1:
            return x, y


def gcd_lcm(rng: random.Random, level: int) -> Problem:
    if level == 1:
        a, b = rng.sample(range(2, 13), 2)
        text = f"What is the greatest common divisor of {a} and {b}?"
        return Problem(text, math.gcd(a, b), {"kind": "gcd", "nums": [a, b]}, f"math.gcd({a}, {b})")
    if level == 2:
        g = rng.randint(2, 12)
        x, y = _coprime_pair(rng, 1, 99 // g)
        a, b = g * x, g * y
        if rng.random() < 0.5:
            text = f"What is the greatest common divisor of {a} and {b}?"
            return Problem(text, math.gcd(a, b), {"kind": "gcd", "nums": [a, b]}, f"math.gcd({a}, {b})")
        text = f"What is the least common multiple of {a} and {b}?"
        return Problem(text, math.lcm(a, b), {"kind": "lcm", "nums": [a, b]}, f"math.lcm({a}, {b})")
    if level == 3:
        if rng.random() < 0.5:
            g = rng.randint(10, 99)
            x, y = _coprime_pair(rng, 10, 99)
            nums = [g * x, g * y]
            text = f"What is the greatest common divisor of {nums[0]} and {nums[1]}?"
            return Problem(
                text, math.gcd(*nums), {"kind": "gcd", "nums": nums}, f"math.gcd({nums[0]}, {nums[1]})"
            )
        nums = sorted(rng.sample(range(4, 31), 3))
        text = f"What is the least common multiple of {nums[0]}, {nums[1]} and {nums[2]}?"
        return Problem(
            text, math.lcm(*nums), {"kind": "lcm", "nums": nums}, f"math.lcm({nums[0]}, {nums[1]}, {nums[2]})"
        )
    if rng.random() < 0.3:
        n = rng.randint(10, 30)
        text = f"What is the least common multiple of all the integers from 1 to {n}?"
        return Problem(
            text, math.lcm(*range(1, n + 1)), {"kind": "lcm_range", "n": n}, f"math.lcm(*range(1, {n} + 1))"
        )
    g = rng.randint(100, 999)
    nums = [g * rng.randint(1000, 99999) for _ in range(3)]
    text = f"What is the greatest common divisor of {nums[0]}, {nums[1]} and {nums[2]}?"
    return Problem(
        text, math.gcd(*nums), {"kind": "gcd", "nums": nums}, f"math.gcd({nums[0]}, {nums[1]}, {nums[2]})"
    )


def _digit_sum(n: int) -> int:
    total = 0
    while n:
        n, d = divmod(n, 10)
        total += d
    return total


def digit_sum(rng: random.Random, level: int) -> Problem:
    if level in (1, 2):
        n = rng.randint(10, 99) if level == 1 else rng.randint(1000, 999999)
        text = f"What is the sum of the digits of {n}?"
        return Problem(text, _digit_sum(n), {"kind": "number", "n": n}, f"sum(int(c) for c in str({n}))")
    if level == 3:
        a, b = rng.randint(100, 999), rng.randint(100, 999)
        text = f"What is the sum of the digits of the product of {a} and {b}?"
        return Problem(
            text,
            _digit_sum(a * b),
            {"kind": "product", "a": a, "b": b},
            f"sum(int(c) for c in str({a} * {b}))",
        )
    if rng.random() < 0.5:
        n = rng.randint(50, 300)
        text = f"What is the sum of the digits of 2^{n}?"
        return Problem(
            text, _digit_sum(2**n), {"kind": "pow2", "n": n}, f"sum(int(c) for c in str(2 ** {n}))"
        )
    n = rng.randint(15, 60)
    text = f"What is the sum of the digits of {n}! ({n} factorial)?"
    return Problem(
        text,
        _digit_sum(math.factorial(n)),
        {"kind": "factorial", "n": n},
        f"sum(int(c) for c in str(math.factorial({n})))",
    )


def linear_equation(rng: random.Random, level: int) -> Problem:
    if level == 1:
        x, a = rng.randint(1, 9), rng.randint(1, 9)
        params = {"a": 1, "b": a, "c": 0, "d": x + a}
        return Problem(f"If x + {a} = {x + a}, what is x?", x, params, f"{x + a} - {a}")
    if level == 2:
        a, x, b = rng.randint(2, 9), rng.randint(2, 20), rng.choice((1, -1)) * rng.randint(1, 30)
        d = a * x + b
        params = {"a": a, "b": b, "c": 0, "d": d}
        return Problem(f"Solve for x: {_lin(a)}{_plus(b)} = {d}.", x, params, f"({d} - ({b})) // {a}")
    if level == 3:
        a, c = rng.sample(range(2, 13), 2)
        x, b = rng.randint(-15, 25), rng.randint(1, 60)
        d = (a - c) * x + b
        params = {"a": a, "b": b, "c": c, "d": d}
        text = f"Solve for x: {_lin(a)}{_plus(b)} = {_lin(c)}{_plus(d)}."
        return Problem(text, x, params, f"({d} - {b}) // ({a} - {c})")
    while True:
        a1, b1, a2, b2 = (rng.randint(1, 9) * rng.choice((1, -1)) for _ in range(4))
        if a1 * b2 - a2 * b1 != 0:
            break
    x, y = rng.randint(-12, 20), rng.randint(-12, 20)
    c1, c2 = a1 * x + b1 * y, a2 * x + b2 * y
    eq1 = f"{_lin(a1)} {'+' if b1 > 0 else '-'} {_lin(abs(b1), 'y')} = {c1}"
    eq2 = f"{_lin(a2)} {'+' if b2 > 0 else '-'} {_lin(abs(b2), 'y')} = {c2}"
    text = f"The numbers x and y satisfy {eq1} and {eq2}. What is x + y?"
    params = {"kind": "system", "eqs": [[a1, b1, c1], [a2, b2, c2]]}
    det = a1 * b2 - a2 * b1
    expr = f"({c1} * {b2} - {c2} * {b1}) // {det} + ({a1} * {c2} - {a2} * {c1}) // {det}"
    return Problem(text, x + y, params, expr)


FAMILIES: dict[str, Callable[[random.Random, int], Problem]] = {
    "addition": addition,
    "multiplication": multiplication,
    "word_problem": word_problem,
    "sequence_sum": sequence_sum,
    "modular": modular,
    "power": power,
    "counting": counting,
    "gcd_lcm": gcd_lcm,
    "digit_sum": digit_sum,
    "linear_equation": linear_equation,
}


def _quota(n: int, cells: int, i: int) -> int:
    """How many of ``n`` problems cell ``i`` gets: an even split, the remainder to the first cells."""
    return n // cells + (1 if i < n % cells else 0)


def _record(p: Problem, family: str, level: int) -> dict[str, Any]:
    return {
        "problem": f"{p.text} {SUFFIX}",
        "answer": str(p.answer),
        "tags": [f"family:{family}", f"level:{level}"],
        "meta": {"params": p.params, "expr": p.expr},
    }


def generate(
    seed: int = 0,
    n_train: int = DEFAULT_N_TRAIN,
    n_eval: int = DEFAULT_N_EVAL,
    families: Sequence[str] | None = None,
    levels: Sequence[int] = LEVELS,
    prefix: str = "",
) -> tuple[list[dict], list[dict]]:
    """Train and eval records, stratified over (family, level) cells and disjoint by text and operands.

    ``families`` / ``levels`` pick the cells (default: all), for a split with another difficulty mix; ``prefix``
    starts the split names and so the ids (``one-step-eval-0000``).

    Each cell draws from its own RNG (seeded from ``seed``, family and level), so one family's changes do not
    reshuffle the others. Records are interleaved cell by cell, so any prefix of a split is roughly stratified.
    """
    families = list(FAMILIES) if families is None else list(families)
    unknown = [f for f in families if f not in FAMILIES] + [str(n) for n in levels if n not in LEVELS]
    if unknown or not families or not levels:
        raise ValueError(
            f"unknown or empty families/levels {unknown or [families, list(levels)]}; "
            f"families: {', '.join(FAMILIES)}; levels: {', '.join(map(str, LEVELS))}"
        )
    cells = [(family, level) for level in levels for family in families]
    seen_keys: set[str] = set()
    seen_texts: set[str] = set()
    train_cells: list[list[dict]] = []
    eval_cells: list[list[dict]] = []
    for i, (family, level) in enumerate(cells):
        rng = random.Random(f"mappa-math:{seed}:{family}:{level}")
        want = _quota(n_train, len(cells), i) + _quota(n_eval, len(cells), i)
        drawn: list[dict] = []
        for _ in range(200 * want + 200):
            if len(drawn) == want:
                break
            p = FAMILIES[family](rng, level)
            key = json.dumps([family, p.params], sort_keys=True)
            if key in seen_keys or p.text in seen_texts:
                continue
            seen_keys.add(key)
            seen_texts.add(p.text)
            drawn.append(_record(p, family, level))
        if len(drawn) < want:
            raise ValueError(
                f"{family} level {level}: found only {len(drawn)} distinct problems, {want} asked"
            )
        n_tr = _quota(n_train, len(cells), i)
        train_cells.append(drawn[:n_tr])
        eval_cells.append(drawn[n_tr:])
    return _interleave(train_cells, f"{prefix}train"), _interleave(eval_cells, f"{prefix}eval")


def _interleave(cells: list[list[dict]], split: str) -> list[dict]:
    out: list[dict] = []
    for k in range(max((len(c) for c in cells), default=0)):
        out.extend(c[k] for c in cells if k < len(c))
    return [{"id": f"{split}-{i:04d}", **rec} for i, rec in enumerate(out)]


def to_jsonl(records: list[dict]) -> str:
    """The exact text written to disk: one JSON object per line, stable key order, trailing newline."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m mappa_envs.taskgen.math_gen", description=__doc__.splitlines()[0]
    )
    ap.add_argument(
        "--out", type=Path, default=Path("tasks/math"), help="folder for train.jsonl and eval.jsonl"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN)
    ap.add_argument("--n-eval", type=int, default=DEFAULT_N_EVAL)
    ap.add_argument("--families", default="", help="comma-separated families (default: all)")
    ap.add_argument("--levels", default="", help="comma-separated levels (default: all)")
    ap.add_argument("--prefix", default="", help="file name prefix: <prefix>train.jsonl, <prefix>eval.jsonl")
    args = ap.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()] or None
    levels = [int(n) for n in args.levels.split(",") if n.strip()] or LEVELS
    train, eval_ = generate(args.seed, args.n_train, args.n_eval, families, levels, args.prefix)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, records in (("train", train), ("eval", eval_)):
        path = args.out / f"{args.prefix}{split}.jsonl"
        path.write_text(to_jsonl(records), encoding="utf-8", newline="\n")
        print(f"wrote {len(records)} tasks to {path}")


if __name__ == "__main__":
    main()
