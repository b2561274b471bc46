"""Mixed precision for the trainable policy: bf16 compute weights, fp32 master weights and optimizer state.

``policy.precision`` names the *compute* dtype: the dtype of the model's weights, so of every forward pass, of
the activations and of the weights the generation backend samples with. The optimizer never steps low-precision
tensors: every trainable parameter stored in bf16 gets an fp32 *master* copy, and the optimizer (so also its
state, e.g. AdamW's moments) holds the masters. Without it, an AdamW step at lr 1e-6 changes about 1% of bf16
elements (an update below half a bf16 ulp rounds away), so a bf16 run silently does not learn.

Why a bf16 compute copy plus an fp32 master (Megatron's and NeMo-RL's FSDP2 ``param_dtype=bf16`` scheme) rather
than ``torch.autocast`` over fp32 parameters:

* the model the policy trains *is* the model generation samples from on the single-process HF path (no refit),
  and the weights refitted into vLLM or an HF generator come from it, so generation gets the compute-dtype
  weights with no extra copy or cast;
* autocast's op coverage differs between CPU and CUDA (which ops run in bf16 is decided per device), whereas a
  bf16 model computes the same way on both; and it works unchanged for the megatron-core ``GPTModel``;
* gradients are accumulated in fp32 (each micro-batch's bf16 gradient is added to the master's fp32 ``grad``
  and freed), and the data-parallel all-reduce and the grad-norm clip run on those fp32 gradients.

Log-probs and the loss are computed in fp32 whatever the compute dtype (:mod:`rlvr.policy.logprobs` upcasts the
logits before the log-softmax). ``float16`` is refused: its narrow exponent range needs dynamic loss scaling,
which this package does not implement; bfloat16 has float32's range and needs none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from rlvr.errors import CheckpointError, ConfigError

PRECISIONS = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}
_FP16_NAMES = ("float16", "fp16", "16", "half")


def parse_precision(value: str | torch.dtype | None, key: str = "policy.precision") -> torch.dtype:
    """The compute dtype named by ``policy.precision`` (None: float32); float16 and unknown names are refused."""
    if value is None:
        return torch.float32
    if isinstance(value, torch.dtype):
        value = str(value).removeprefix("torch.")
    name = str(value).lower().removeprefix("torch.")
    if name in _FP16_NAMES:
        raise ConfigError(
            f"{key}: {value!r} is not supported: float16 training needs loss scaling, which is not "
            "implemented; use bfloat16 (same memory, float32's range, fp32 master weights) or float32"
        )
    if name not in PRECISIONS:
        raise ConfigError(f"{key}: unknown {value!r}; known: {sorted(PRECISIONS)}")
    return PRECISIONS[name]


class MasterWeights:
    """fp32 master copies of the low-precision trainable parameters of a model.

    ``named_params``: the trainable ``(name, parameter)`` pairs. A parameter already in fp32 is its own master
    (no copy: an fp32 run behaves exactly as without this class); any other gets an fp32 clone. The optimizer is
    built over :meth:`named_parameters`. Per optimizer step: :meth:`accumulate_grads` after each backward,
    clip and step the masters, then :meth:`copy_to_model`.
    """

    def __init__(self, named_params: Iterable[tuple[str, torch.nn.Parameter]]):
        self._pairs: list[tuple[str, torch.nn.Parameter, torch.nn.Parameter]] = []
        for name, param in named_params:
            if param.dtype == torch.float32:
                master = param
            else:
                master = torch.nn.Parameter(param.detach().float().clone(), requires_grad=True)
            self._pairs.append((name, param, master))

    @property
    def has_copies(self) -> bool:
        """Whether any parameter is trained through an fp32 copy (a bf16 model)."""
        return any(p is not m for _, p, m in self._pairs)

    def named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """``(name, fp32 parameter)`` pairs for the optimizer, named as in the model."""
        return [(name, master) for name, _, master in self._pairs]

    def parameters(self) -> list[torch.nn.Parameter]:
        return [master for _, _, master in self._pairs]

    def _copies(self) -> list[tuple[str, torch.nn.Parameter, torch.nn.Parameter]]:
        return [(name, p, m) for name, p, m in self._pairs if p is not m]

    def zero_grad(self) -> None:
        """Drop the model's low-precision gradients (the optimizer's zero_grad clears the masters')."""
        for _, param, _ in self._copies():
            param.grad = None

    @torch.no_grad()
    def accumulate_grads(self) -> None:
        """Add each low-precision ``grad`` to its master's fp32 ``grad`` and free it.

        Called after every micro-batch's backward, so the sum over micro-batches is taken in fp32 (a bf16
        ``grad`` accumulated over many micro-batches would lose the small contributions).
        """
        for _, param, master in self._copies():
            if param.grad is None:
                continue
            if master.grad is None:
                master.grad = param.grad.float()
            else:
                master.grad.add_(param.grad)
            param.grad = None

    @torch.no_grad()
    def copy_to_model(self) -> None:
        """Round the stepped masters into the model's compute-dtype weights."""
        for _, param, master in self._copies():
            param.copy_(master)

    @torch.no_grad()
    def copy_from_model(self) -> None:
        """Reset the masters from the model's weights (after loading weights without master copies)."""
        for _, param, master in self._copies():
            master.copy_(param)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The fp32 copies by parameter name (empty for an fp32 model: its weights are the masters)."""
        return {name: master.detach() for name, _, master in self._copies()}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`; the model's weights are set to the rounded masters."""
        copies = self._copies()
        names = {name for name, _, _ in copies}
        if set(state) != names:
            missing, extra = sorted(names - set(state)), sorted(set(state) - names)
            raise CheckpointError(
                f"checkpoint master weights do not match the policy's bf16 parameters "
                f"(missing {missing[:5]}, unexpected {extra[:5]}); was it saved with another "
                "policy.precision?"
            )
        for name, _, master in copies:
            if tuple(state[name].shape) != tuple(master.shape):
                raise CheckpointError(
                    f"checkpoint master weight {name!r} has shape {tuple(state[name].shape)}, "
                    f"the policy {tuple(master.shape)}"
                )
            master.copy_(state[name])
        self.copy_to_model()
