"""``TeamWeights``: the trainable weights of every role over one base causal LM, the frozen reference, persistence.

Modes
-----
* ``lora`` (default): ONE base model, one peft LoRA adapter per role (``get_peft_model`` for the first role,
  ``add_adapter`` for the others; ``set_adapter(role)`` selects one). LoRA B starts at zero, so at init every role
  *is* the base model and the KL to the reference is exactly 0. The reference is the same model with adapters
  disabled (``disable_adapter()``) — no second copy. The base model object passed in is wrapped in place.
* ``full``: one full deep copy of the base per role (all parameters trainable); the base model passed in becomes
  the frozen reference (``requires_grad=False``). Memory: roles + 1 copies.

Invariant: in lora mode at most one adapter is active, and :meth:`TeamWeights.model_for` is the only place that
switches it, so a caller that selected its role keeps it until it asks for another.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from mappa_train.logprobs import unwrap_model

_ROLE_NAME = re.compile(r"[A-Za-z0-9_\-]+")


def check_roles(roles: Sequence[str], mode: str) -> list[str]:
    """The roles as a list, or a ``ValueError`` naming the role that cannot name an adapter and a folder."""
    roles = list(roles)
    if not roles or len(set(roles)) != len(roles):
        raise ValueError(f"roles must be non-empty and unique, got {roles}")
    for role in roles:
        if not _ROLE_NAME.fullmatch(role):
            raise ValueError(
                f"role name {role!r} must match [A-Za-z0-9_-]+ (it names an adapter and a folder)"
            )
        # peft looks adapter names up inside parameter names: "a", "lo", "ra" ... would match "lora_"
        if mode == "lora" and role in "lora_":
            raise ValueError(f"role name {role!r} clashes with peft's 'lora_' parameter prefix; pick another")
    if mode not in ("lora", "full"):
        raise ValueError(f"mode must be 'lora' or 'full', got {mode!r}")
    return roles


class TeamWeights:
    """One causal LM per role (LoRA adapters on one base, or full copies) with a shared frozen reference."""

    def __init__(
        self,
        base_model: nn.Module,
        roles: Sequence[str],
        mode: Literal["lora", "full"] = "lora",
        lora_r: int = 16,
        lora_alpha: int = 32,
        lora_dropout: float = 0.0,
        target_modules: str | list[str] = "all-linear",
        seed: int | None = 0,
    ) -> None:
        self.roles = check_roles(roles, mode)
        self.mode = mode
        self.lora_settings = {
            "r": lora_r,
            "lora_alpha": lora_alpha,
            "lora_dropout": lora_dropout,
            "target_modules": target_modules,
        }
        self.config = base_model.config
        self.model: nn.Module | None = None  # the peft model (lora)
        self.models: dict[str, nn.Module] = {}  # one copy per role (full)
        self.ref_model: nn.Module | None = None  # the frozen copy (full)
        self._active: str | None = None
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            if mode == "lora":
                self._build_lora(base_model)
            else:
                self._build_full(base_model)
        self.eval()

    def _build_lora(self, base_model: nn.Module) -> None:
        from peft import LoraConfig, get_peft_model

        for p in base_model.parameters():
            p.requires_grad_(False)
        config = LoraConfig(task_type="CAUSAL_LM", bias="none", **self.lora_settings)
        with warnings.catch_warnings():  # peft 0.21 calls transformers' deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(base_model, config, adapter_name=self.roles[0])
        for role in self.roles[1:]:
            model.add_adapter(role, LoraConfig(task_type="CAUSAL_LM", bias="none", **self.lora_settings))
        self.model = model
        self._activate(self.roles[0])

    def _build_full(self, base_model: nn.Module) -> None:
        for p in base_model.parameters():
            p.requires_grad_(False)
        self.ref_model = base_model
        for role in self.roles:
            copy_ = copy.deepcopy(base_model)
            for p in copy_.parameters():
                p.requires_grad_(True)
            self.models[role] = copy_

    # ------------------------------------------------------------------------------------------------ selection

    @property
    def device(self) -> torch.device:
        # Never via model_for: selecting an adapter here would switch the active LoRA adapter under a caller that
        # already selected its role (the update would then run, and train, the first role's adapter).
        model = self.model if self.mode == "lora" else self.models[self.roles[0]]
        return next(model.parameters()).device

    def check_role(self, role: str) -> None:
        if role not in self.roles:
            raise KeyError(f"unknown role {role!r}; roles: {self.roles}")

    def _activate(self, role: str) -> None:
        if self.mode == "lora" and self._active != role:
            self.model.set_adapter(role)  # also makes only this adapter's parameters require grad
            self._active = role

    def model_for(self, role: str) -> nn.Module:
        """The module that runs ``role`` (in lora mode: the shared model with ``role``'s adapter selected)."""
        self.check_role(role)
        if self.mode == "lora":
            self._activate(role)
            return self.model
        return self.models[role]

    @contextmanager
    def forward_role(self, role: str) -> Iterator[nn.Module]:
        """The model to run for a training forward pass of ``role`` (its adapter selected and trainable)."""
        yield self.model_for(role)

    @contextmanager
    def reference(self) -> Iterator[nn.Module]:
        """The frozen reference model: the base with adapters disabled (lora) or the reference copy (full)."""
        if self.mode == "lora":
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.ref_model

    def trainable_parameters(self, role: str) -> list[nn.Parameter]:
        """The parameters an optimiser for ``role`` should update (its LoRA A/B, or its whole copy)."""
        self.check_role(role)
        if self.mode == "full":
            return list(self.models[role].parameters())
        params = []
        for name, param in self.model.named_parameters():
            parts = name.split(".")
            if any(parts[i].startswith("lora_") and parts[i + 1] == role for i in range(len(parts) - 1)):
                params.append(param)
        return params

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each decoder layer in backward instead of keeping its activations (training mode only).

        Why: on long rows (DSBench: 1k-token prompts + 512-token replies) the activations, not the weights, are
        what fills memory, so without it only one row fits per micro-batch on a 24 GiB machine. Costs about one
        more forward per backward. Non-reentrant checkpointing, so frozen inputs (LoRA on a frozen base) still get
        gradients. Generation and no-grad scoring are unaffected (transformers checkpoints only in training).
        """
        for module in self.modules():
            if module is self.ref_model:
                continue
            base = unwrap_model(module)
            if not getattr(base, "supports_gradient_checkpointing", False):
                raise ValueError(f"{type(base).__name__} does not support gradient checkpointing")
            kwargs = {"use_reentrant": False}
            if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns
                base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def modules(self) -> list[nn.Module]:
        return [self.model] if self.mode == "lora" else [*self.models.values(), self.ref_model]

    def train(self) -> None:
        for m in self.modules():
            m.train()
        if self.mode == "full":
            self.ref_model.eval()

    def eval(self) -> None:
        for m in self.modules():
            m.eval()

    @property
    def training(self) -> bool:
        return self.modules()[0].training

    # ------------------------------------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write every role's weights under ``path`` atomically (a temporary folder renamed into place).

        Layout: ``team.json`` (mode, roles, LoRA settings) and one folder per role: a standard peft adapter
        (``adapter_model.safetensors`` + ``adapter_config.json``, loadable by ``PeftModel.from_pretrained`` or
        a vLLM LoRA server) in lora mode, ``model.safetensors`` in full mode.
        """
        from safetensors.torch import save_file, save_model

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
        try:
            for role in self.roles:
                folder = tmp / role
                folder.mkdir()
                if self.mode == "lora":
                    from peft import get_peft_model_state_dict

                    state = get_peft_model_state_dict(self.model, adapter_name=role)
                    save_file(
                        {k: v.detach().contiguous().cpu() for k, v in state.items()},
                        folder / "adapter_model.safetensors",
                    )
                    self.model.peft_config[role].save_pretrained(str(folder))
                else:
                    save_model(self.models[role], str(folder / "model.safetensors"))
            manifest = {
                "mode": self.mode,
                "roles": self.roles,
                "lora": {
                    k: v if isinstance(v, str | int | float) else list(v)
                    for k, v in self.lora_settings.items()
                },
                "base_model": getattr(self.config, "_name_or_path", ""),
            }
            (tmp / "team.json").write_text(json.dumps(manifest, indent=2))
            tmp.chmod(0o755)
            old = None
            if path.exists():
                old = path.parent / f".{path.name}.old-{os.getpid()}"
                os.rename(path, old)
            os.rename(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return path

    def load(self, path: str | Path) -> None:
        """Load weights written by :meth:`save` into these weights (same mode and roles)."""
        from safetensors.torch import load_file, load_model

        path = Path(path)
        manifest = json.loads((path / "team.json").read_text())
        if manifest["mode"] != self.mode or sorted(manifest["roles"]) != sorted(self.roles):
            raise ValueError(
                f"{path} holds mode={manifest['mode']} roles={manifest['roles']}; "
                f"this policy is mode={self.mode} roles={self.roles}"
            )
        for role in self.roles:
            folder = path / role
            if self.mode == "lora":
                from peft import set_peft_model_state_dict

                saved = json.loads((folder / "adapter_config.json").read_text())
                for key in ("r", "lora_alpha"):
                    if saved.get(key) != self.lora_settings[key]:
                        raise ValueError(
                            f"{folder}: {key}={saved.get(key)}, this policy has {self.lora_settings[key]}"
                        )
                state = load_file(str(folder / "adapter_model.safetensors"), device=str(self.device))
                result = set_peft_model_state_dict(self.model, state, adapter_name=role)
                unexpected = getattr(result, "unexpected_keys", [])
                if unexpected:
                    raise ValueError(f"{folder}: unexpected adapter keys {unexpected[:5]}")
            else:
                load_model(
                    self.models[role], str(folder / "model.safetensors"), strict=True, device=str(self.device)
                )
