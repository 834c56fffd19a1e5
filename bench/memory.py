"""Peak memory of one team update step: 3 LoRA adapters on one base vs 3 full models vs 1 LoRA adapter.

One update step is exactly what ``Trainer.update`` does: ``compute_advantages`` (old and reference log-probs, no
grad, then REINFORCE++ advantages over the batch) followed by ``update_role`` (forward + backward + AdamW step)
for every role. The model is a Llama-shaped config built in-process with random weights (no download); the
samples are hand-built with random token ids. Every role updates on the same batch: ``--actions`` actions of
``--tokens`` tokens each (half prompt, half completion). Arms, each in a fresh subprocess:

    (a) lora3  TeamPolicy(mode="lora"), 3 roles: one base + 3 adapters, 3 AdamW optimisers
    (b) full3  TeamPolicy(mode="full"), 3 roles: the frozen reference + 3 trainable copies, 3 AdamW optimisers
    (c) lora1  TeamPolicy(mode="lora"), 1 role: one base + 1 adapter (the single-agent baseline)
    (d) lora3-gc  (a) with gradient checkpointing (``gradient_checkpointing: true``): what long rows cost with it

Targets (issue tracker): (a)/(b) <= 0.4 and (a)/(c) <= 1.2. (d)/(a) is printed with its step-time ratio, no target.

Memory: on CUDA the peak is ``torch.cuda.max_memory_allocated`` (tensors only). On CPU, which has no memory stats
API, it is the process's peak resident set (``ru_maxrss``); the "net" columns subtract the resident set after the
imports (torch + transformers + peft, before any model exists), which is what the tensors and the allocator
account for, and the ratios are judged on net peaks (the raw ratio is printed too). The children run with a fixed
glibc mmap threshold (``--malloc fixed``, the default): with glibc's dynamic threshold, freed activation memory
stays resident and the same arm peaked at 8.1 GiB in one run and 11.0 GiB in another; with the fixed threshold
peaks repeat to 0.01 GiB and approximate live tensor bytes, at the price of ~20 % slower steps (page faults). ``--steps`` update steps run
(default 2): AdamW creates its state lazily in the first step, so only from the second step on does a role's
backward pass run while the other roles' optimiser states exist; the peak is over all steps, the time is the last
step's.

Sizes: ``1b`` (hidden 2048, 18 layers, 16 heads, intermediate 5632, vocab 32000: 1.06B parameters), ``fit``
(the same width, as many layers as let arm (b) fit the memory budget), ``quick`` (46M) and ``smollm2`` (the
embedded SmolLM2-135M's shape, 135M). An arm whose estimated peak exceeds the
budget (``--budget-gib``, default 75 % of MemAvailable, leaving room for other processes; on CUDA 90 % of free
device memory) is skipped and says so instead of meeting the OOM killer. Default dtype: bfloat16 on CUDA, float32 on CPU (the trainer's defaults;
bf16 matmuls on a CPU without AMX/avx512_bf16 are ~4x slower than fp32).

    .venv/bin/python bench/memory.py                 # sizes 1b and fit, arms a, b, c (~10 min on 2 CPU cores)
    .venv/bin/python bench/memory.py --quick         # a 45M model, 2 actions x 128 tokens (~1 min)
    .venv/bin/python bench/memory.py --sizes fit --arms a,b --dtype bfloat16
    .venv/bin/python bench/memory.py --sizes smollm2 --arms a,d --actions 2 --tokens 1536  # DSBench-like rows
    .venv/bin/python bench/memory.py --quick --baseline-ref main   # + each arm with main's TeamPolicy: new/old
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from machine import cpu_name, foreign_load, system_busy_s, tree_cpu_s

GIB = 1024**3
ROLES = ["solver", "coder", "verifier"]
ARMS = {  # name: (label, mode, number of roles, gradient checkpointing)
    "a": ("lora3", "lora", 3, False),
    "b": ("full3", "full", 3, False),
    "c": ("lora1", "lora", 1, False),
    "d": ("lora3-gc", "lora", 3, True),
}
# glibc raises its mmap threshold each time a large mmapped block is freed, after which big tensors come from the
# heap and freed memory stays resident: the peak RSS then depends on the order of frees (we saw 8.1 and 11.0 GiB
# for the same 1b lora1 arm). A fixed threshold keeps every block >= 128 KiB in its own mapping, returned on free.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}
MARGIN = 1.1  # an arm runs only when its estimate x MARGIN fits the budget
# numerator arm, denominator arm, target: ratio <= target (None: measured, no target)
TARGETS: list[tuple[str, str, float | None]] = [("a", "b", 0.4), ("a", "c", 1.2), ("d", "a", None)]


@dataclass
class Shape:
    """A Llama-shaped config (multi-head attention, untied embeddings)."""

    name: str
    hidden: int = 2048
    layers: int = 18
    heads: int = 16
    intermediate: int = 5632
    vocab: int = 32000
    kv_heads: int = 0  # 0: multi-head attention (as many key/value heads as heads)
    tied: bool = False  # input and output embeddings shared

    @property
    def params(self) -> int:
        kv = (self.kv_heads or self.heads) * (self.hidden // self.heads)
        per_layer = (
            2 * self.hidden**2 + 2 * self.hidden * kv + 3 * self.hidden * self.intermediate + 2 * self.hidden
        )
        return (1 if self.tied else 2) * self.vocab * self.hidden + self.layers * per_layer + self.hidden


ONE_B = Shape("1b")
QUICK = Shape("quick", hidden=512, layers=4, heads=8, intermediate=1408)
# The embedded model's shape (SmolLM2-135M-Instruct: grouped-query attention, tied embeddings), random weights.
SMOLLM2 = Shape(
    "smollm2", hidden=576, layers=30, heads=9, intermediate=1536, vocab=49152, kv_heads=3, tied=True
)


# ---------------------------------------------------------------------------------------------------- estimates


def dtype_bytes(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


def estimate_bytes(shape: Shape, arm: str, dtype: str, actions: int, tokens: int) -> float:
    """A deliberately generous peak estimate, used only to skip arms that cannot fit.

    Weights W per copy; full mode holds roles+1 copies, a gradient per role (``update_role`` zeroes gradients
    at the start of a role's pass, so every role's gradients outlive its step) and two AdamW moments per role:
    (1 + 4 * roles) W. Activations and backward buffers of one micro-batch: 32 hidden + 7 intermediate values
    per token per layer in the model dtype (fitted to CPU float32 peaks of the 1b and fit shapes, LoRA on all
    linear layers).
    """
    _, mode, roles, _ = ARMS[arm]  # checkpointing only lowers the peak: the estimate stays generous
    nbytes = dtype_bytes(dtype)
    weights = shape.params * nbytes
    acts = actions * tokens * shape.layers * (32 * shape.hidden + 7 * shape.intermediate) * nbytes
    logits = 2 * min(512, actions * tokens // 2) * shape.vocab * 4  # one float32 chunk + its gradient
    if mode == "full":
        return (1 + 4 * roles) * weights + acts + logits
    lora = roles * 3 * 0.02 * weights  # adapters + their AdamW state: a few % of W at r=16
    return weights + lora + acts + logits


def available_bytes(device: str) -> float:
    if device == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return float(free)
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return float(info["MemAvailable"])


def fit_shape(budget: float, dtype: str, actions: int, tokens: int) -> Shape | None:
    """The 1b shape with as many layers (<= 18) as let the full-model arm fit ``budget``."""
    for layers in range(ONE_B.layers, 0, -1):
        shape = Shape("fit", layers=layers)
        if estimate_bytes(shape, "b", dtype, actions, tokens) * MARGIN <= budget:
            return shape
    return None


# ---------------------------------------------------------------------------------------------------- child


def rss_peak_bytes() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0  # Linux: KiB


def rss_now_bytes() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def llama_config(shape: Shape):
    """The transformers config of ``shape``: what every arm builds, with random weights."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads or shape.heads,
        max_position_embeddings=4096,
        tie_word_embeddings=shape.tied,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )


def missed_targets(all_rows: list[tuple[Shape, dict[str, dict]]]) -> int:
    """How many measured ratios exceed their target; a ratio with no target (``None``) is never a miss."""
    return sum(
        1
        for _, results in all_rows
        for num, den, target in TARGETS
        if target is not None
        and "net" in results.get(num, {})
        and "net" in results.get(den, {})
        and results[num]["net"] / results[den]["net"] > target
    )


def child(spec: dict) -> dict:
    """One arm in this (fresh) process: build, run ``steps`` update steps, report peaks and times."""
    import torch
    from transformers import LlamaForCausalLM

    from mappa_train.config import TrainConfig
    from mappa_train.models import build_tiny_tokenizer, prepare_tokenizer
    from mappa_train.policy import TeamPolicy
    from mappa_train.types import Sample

    if spec.get("baseline_ref"):
        from baseline import policy_class

        TeamPolicy = policy_class(spec["baseline_ref"])  # noqa: N806
    from mappa_train.update import compute_advantages, update_role

    device, dtype = spec["device"], getattr(torch, spec["dtype"])
    cuda = device == "cuda"
    shape = Shape(**spec["shape"])
    _, mode, n_roles, checkpointing = ARMS[spec["arm"]]
    roles = ROLES[:n_roles]
    base_rss = rss_now_bytes()

    torch.manual_seed(0)
    config = llama_config(shape)
    t0 = time.perf_counter()
    torch.set_default_dtype(dtype)  # build in the target dtype: no transient float32 copy in the peak
    model = LlamaForCausalLM(config).to(device=device)
    torch.set_default_dtype(torch.float32)
    tokenizer = prepare_tokenizer(build_tiny_tokenizer())  # ids 0-3 are its specials; the rest is random ids
    policy = TeamPolicy(model, tokenizer, roles, mode=mode, lora_r=16, lora_alpha=32)
    if checkpointing:
        policy.enable_gradient_checkpointing()
    tc = TrainConfig(mode=mode, micro_batch=max(spec["actions"], 1), temperature=1.0)
    optimizers = {
        r: torch.optim.AdamW(policy.trainable_parameters(r), lr=tc.lr, weight_decay=tc.weight_decay)
        for r in roles
    }
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for m in policy.modules() for p in m.parameters())
    n_trainable = sum(p.numel() for r in roles for p in policy.trainable_parameters(r))

    gen = torch.Generator().manual_seed(1)
    half = spec["tokens"] // 2
    samples = []
    for role in roles:
        for i in range(spec["actions"]):
            ids = torch.randint(4, shape.vocab, (2 * half,), generator=gen).tolist()
            samples.append(
                Sample(
                    role=role,
                    prompt_ids=ids[:half],
                    completion_ids=ids[half:],
                    behaviour_logprobs=[0.0] * half,
                    reward=float(i % 2),
                    episode_id=f"ep{i}",
                )
            )

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        after_build = torch.cuda.memory_allocated()
    else:
        after_build = rss_now_bytes()
    step_times = []
    for _ in range(spec["steps"]):  # what Trainer.update does
        t0 = time.perf_counter()
        policy.train()
        prepared, _ = compute_advantages(policy, samples, tc)
        for role in roles:
            idx = [i for i, s in enumerate(samples) if s.role == role]
            update_role(policy, optimizers[role], role, samples, prepared, idx, tc)
        if cuda:
            torch.cuda.synchronize()
        step_times.append(time.perf_counter() - t0)
    if cuda:
        peak, baseline = float(torch.cuda.max_memory_allocated()), 0.0
    else:
        peak, baseline = rss_peak_bytes(), base_rss
    return {
        "arm": spec["arm"],
        "params": n_params,
        "params_base": shape.params,
        "dtype": spec["dtype"],
        "trainable": n_trainable,
        "build_s": build_s,
        "step_s": step_times[-1],
        "first_step_s": step_times[0],
        "baseline": baseline,
        "after_build": float(after_build),
        "peak": peak,
        "net": peak - baseline,
        "tokens": len(samples) * spec["tokens"],
    }


# ---------------------------------------------------------------------------------------------------- parent


def run_arm(spec: dict, malloc: str = "fixed") -> dict:
    extra = MALLOC_ENV if malloc == "fixed" else {}
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **extra},
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return {"arm": spec["arm"], "error": f"exit {proc.returncode}: " + " | ".join(tail)}


def gib(x: float) -> str:
    return f"{x / GIB:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 45M model, 2 actions x 128 tokens, arms a, b, c")
    ap.add_argument(
        "--sizes",
        default=None,
        help="comma list of 1b, fit, quick, smollm2 (default: 1b,fit; --quick: quick)",
    )
    ap.add_argument("--arms", default="a,b,c")
    ap.add_argument("--actions", type=int, default=None, help="actions per role (default 4; --quick 2)")
    ap.add_argument("--tokens", type=int, default=None, help="tokens per action (default 256; --quick 128)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--budget-gib", type=float, default=None, help="skip arms estimated above this")
    ap.add_argument("--force", action="store_true", help="run arms even when estimated over the budget")
    ap.add_argument(
        "--malloc",
        default="fixed",
        choices=["fixed", "default"],
        help="CPU: fixed glibc mmap threshold (reproducible peaks; steps ~20%% slower from page faults) or glibc's",
    )
    ap.add_argument(
        "--baseline-ref",
        default=None,
        help="also run every arm with REF's TeamPolicy (git show REF:mappa_train/policy.py) and print new/old",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return

    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if device == "cuda" else "float32")
    actions = args.actions or (2 if args.quick else 4)
    tokens = args.tokens or (128 if args.quick else 256)
    sizes = (args.sizes or ("quick" if args.quick else "1b,fit")).split(",")
    arms = [a.strip() for a in args.arms.split(",")]
    avail = available_bytes(device)
    budget = args.budget_gib * GIB if args.budget_gib else avail * (0.9 if device == "cuda" else 0.75)

    if device == "cuda":
        where = f"{torch.cuda.get_device_name()} (peak = torch.cuda.max_memory_allocated)"
    else:
        where = (
            f"{cpu_name()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()} (peak = ru_maxrss, "
            f"malloc {args.malloc}{' mmap threshold 128 KiB' if args.malloc == 'fixed' else ''})"
        )
    print(f"memory bench, {time.strftime('%Y-%m-%d')}: {where}")
    print(
        f"dtype {dtype}, {actions} actions x {tokens} tokens per role ({tokens // 2} prompt + {tokens // 2} "
        f"completion), {args.steps} update steps (compute_advantages + update_role per role, AdamW), "
        f"LoRA r=16 all-linear"
    )
    print(f"memory available {gib(avail)} GiB, budget {gib(budget)} GiB")

    print(f"1-min load average before the bench started: {os.getloadavg()[0]:.2f}")
    busy0, tree0, t0 = system_busy_s(), tree_cpu_s(), time.perf_counter()
    all_rows: list[tuple[Shape, dict[str, dict]]] = []
    baselines: dict[tuple[str, str], tuple[dict, dict]] = {}
    for size in sizes:
        if size == "1b":
            shape = ONE_B
        elif size == "quick":
            shape = QUICK
        elif size == "smollm2":
            shape = SMOLLM2
        elif size == "fit":
            shape = fit_shape(budget, dtype, actions, tokens)
            if shape is None:
                print("fit: not even one layer of the 1b shape fits arm (b) in the budget")
                continue
        else:
            raise SystemExit(f"unknown size {size!r}")
        results: dict[str, dict] = {}
        for arm in arms:
            est = estimate_bytes(shape, arm, dtype, actions, tokens)
            if est * MARGIN > budget and not args.force:
                results[arm] = {"arm": arm, "skipped": f"estimated {gib(est)} GiB > budget {gib(budget)} GiB"}
                continue
            spec = {
                "arm": arm,
                "shape": asdict(shape),
                "device": device,
                "dtype": dtype,
                "actions": actions,
                "tokens": tokens,
                "steps": args.steps,
            }
            results[arm] = run_arm(spec, args.malloc)
            results[arm]["estimate"] = est
            if args.baseline_ref:
                baselines[(shape.name, arm)] = (
                    results[arm],
                    run_arm({**spec, "baseline_ref": args.baseline_ref}),
                )
        all_rows.append((shape, results))
        print_table(shape, results, args.quick)
    if baselines:
        print_baseline(baselines, args.baseline_ref)
    misses = missed_targets(all_rows)
    print(f"\n{misses} target(s) missed" if misses else "\nall measured targets met")
    if device == "cpu":
        print(foreign_load(busy0, tree0, time.perf_counter() - t0))


def print_baseline(pairs: dict[tuple[str, str], tuple[dict, dict]], ref: str) -> None:
    """New / old net peak memory and step time per (size, arm): 1.00 = unchanged by this tree's changes."""
    print(f"\n-- before/after: this tree's TeamPolicy vs {ref}'s (same arm, fresh process each)")
    print(
        f"{'size':<8} {'arm':<9} {'net GiB new':>11} {'net GiB old':>11} {'mem new/old':>11} {'step new/old':>12}"
    )
    for (size, arm), (new, old) in pairs.items():
        if "net" not in new or "net" not in old:
            print(f"{size:<8} {ARMS[arm][0]:<9} {new.get('error') or old.get('error')}")
            continue
        print(
            f"{size:<8} {ARMS[arm][0]:<9} {gib(new['net']):>11} {gib(old['net']):>11} "
            f"{new['net'] / old['net']:>11.3f} {new['step_s'] / old['step_s']:>12.3f}"
        )
    sys.stdout.flush()


def print_table(shape: Shape, results: dict[str, dict], quick: bool) -> None:
    print(
        f"\n== {shape.name}: hidden {shape.hidden}, {shape.layers} layers, {shape.heads} heads, intermediate "
        f"{shape.intermediate}, vocab {shape.vocab}: {shape.params / 1e6:.0f}M parameters per model"
    )
    head = (
        f"{'arm':<12} {'params':>9} {'trainable':>10} {'base GiB':>9} {'built GiB':>10} {'peak GiB':>9} "
        f"{'net GiB':>8} {'est GiB':>8} {'step s':>7} {'1st s':>6} {'tok/s':>6}"
    )
    print(head)
    for arm, r in results.items():
        label = f"({arm}) {ARMS[arm][0]}"
        if "skipped" in r or "error" in r:
            print(f"{label:<12} {'skipped: ' + r['skipped'] if 'skipped' in r else 'FAILED: ' + r['error']}")
            continue
        print(
            f"{label:<12} {r['params'] / 1e6:>8.0f}M {r['trainable'] / 1e6:>9.1f}M {gib(r['baseline']):>9} "
            f"{gib(r['after_build']):>10} {gib(r['peak']):>9} {gib(r['net']):>8} {gib(r['estimate']):>8} "
            f"{r['step_s']:>7.1f} {r['first_step_s']:>6.1f} {r['tokens'] / r['step_s']:>6.0f}"
        )
    for num, den, target in TARGETS:
        a, b = results.get(num, {}), results.get(den, {})
        name = f"({num})/({den}) {ARMS[num][0]}/{ARMS[den][0]}"
        if "net" not in a or "net" not in b:
            line = f"{name:<22} not measured (target <= {target})"
            if num == "a" and den == "b" and "net" in a and "skipped" in b:
                # At the peak of step 2 these coexist: roles + 1 weight copies, every role's gradients and both
                # AdamW moments. So (b) >= (1 + 4 roles) W, and (a)/(b) <= (a) / that.
                floor = (1 + 4 * ARMS["b"][2]) * a["params_base"] * dtype_bytes(a["dtype"])
                bound = a["net"] / floor
                verdict = "PASS (bound)" if bound <= target else "undecided"
                line += (
                    f"; (b) >= {1 + 4 * ARMS['b'][2]} W = {gib(floor)} GiB (weights + gradients + AdamW moments that "
                    f"coexist), so (a)/(b) <= {bound:.3f}: {verdict}"
                )
            print(line)
            continue
        ratio, raw = a["net"] / b["net"], a["peak"] / b["peak"]
        if target is None:
            slower = a["step_s"] / b["step_s"]
            print(f"{name:<22} net {ratio:.3f}  raw {raw:.3f}  step time {slower:.2f}x  (no target)")
            continue
        verdict = "PASS" if ratio <= target else "MISS"
        note = "  (quick: far below the 1B regime the target is about)" if quick else ""
        print(f"{name:<22} net {ratio:.3f}  raw {raw:.3f}  target <= {target}: {verdict}{note}")


if __name__ == "__main__":
    main()
