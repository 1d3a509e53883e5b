"""A pretend CUDA device for a machine without one: catches "Expected all tensors to be on the same device" bugs.

The bugs issue 13 found on the first GPU run were tensors built on the CPU (`torch.zeros(n)`, `torch.tensor([...])`)
and then mixed with the inputs, which lived on CUDA. On a CPU-only machine both are on the CPU and nothing fails.
`fake_cuda()` makes a second device visible without a GPU:

    with fake_cuda() as cuda:
        ids = cuda.put(torch.tensor(...))     # reports ids.device == cuda:0; the numbers stay in CPU memory
        labels = vocab.labels(ids)            # raises FakeDeviceError if labels() mixes in a CPU tensor
        assert cuda.on_device(labels)

How: tensors "on" the fake device are wrapper subclasses (like torch's FakeTensor) that report `device cuda:0` but
carry real CPU data, so data-dependent code (`.item()`, `bincount`, `nonzero`, boolean masks) runs as it would on a
GPU. A TorchDispatchMode sees every aten op: factory functions asked for `device="cuda"` (e.g.
`torch.zeros(3, device=x.device)`) are built on the CPU and wrapped; ops that mix a wrapped tensor with a plain CPU
tensor of one element or more raise, exactly like CUDA does (0-dim CPU tensors mix freely there, as on CUDA); copies
between devices (`.to`, `.cpu()`, `copy_`) are allowed. `torch.cuda.is_available()` stays False, so code that asks
for CUDA-only features (pinned memory, CUDA RNG state, CUDA autocast) is not exercised here.
"""

from __future__ import annotations

import contextlib

import torch
import torch._dynamo  # noqa: F401 (nn.Module imports it lazily; it checks the signature `fake_cuda` patches)
from torch.utils._pytree import tree_map
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

FAKE = torch.device("cuda", 0)
_CPU = torch.device("cpu")
_CUDA = torch.device("cuda")
# Ops that move data between devices on purpose: they may see both devices.
_TRANSFERS = {"aten::_to_copy", "aten::copy_", "aten::to", "aten::_copy_from", "aten::_copy_from_and_resize",
              "aten::lift_fresh", "aten::lift_fresh_copy", "aten::detach", "aten::alias", "aten::set_"}


# Ops whose index argument (args[1]) may stay on the CPU when the tensor indexed is on CUDA.
_CPU_INDICES_ALLOWED = {"aten::index", "aten::index_put_", "aten::index_put", "aten::_index_put_impl_",
                        "aten::_unsafe_index", "aten::_unsafe_index_put"}


class FakeDeviceError(RuntimeError):
    """What CUDA would have raised: an op mixed tensors on two devices."""


class OnFakeCuda(torch.Tensor):
    """A CPU tensor that says it lives on cuda:0 (see the module docstring).

    Built the way torch's FakeTensor is: the tensor itself is a meta tensor (shape, strides, dtype; no memory, and
    a device guard that does nothing, so no CUDA call is ever made) whose dispatch keys are CUDA's and whose Python
    `.device` says cuda:0; the real numbers live in `.elem` on the CPU."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        assert type(elem) is torch.Tensor and elem.device.type == "cpu", (type(elem), elem.device)
        # Never an inference tensor itself (autograd sets view metadata on the wrapper, also in inference mode).
        with torch._C._DisableTorchDispatch(), torch.inference_mode(False):
            meta = torch.empty_strided(elem.shape, elem.stride(), dtype=elem.dtype, device="meta")
        out = torch.Tensor._make_subclass(cls, meta, elem.requires_grad, dispatch_device=True,
                                          device_for_backend_keys=FAKE)
        out.elem = elem
        return out

    @property
    def device(self) -> torch.device:  # noqa: D102
        return FAKE

    def __repr__(self, *, tensor_contents=None):  # noqa: D105
        return f"OnFakeCuda({self.elem!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        # Reached only outside a FakeCudaMode (e.g. a wrapped tensor kept after the `with` block): run as the mode.
        with FakeCudaMode():
            return func(*args, **(kwargs or {}))


def _device_of(value) -> torch.device | None:
    if value is None:
        return None
    return torch.device(value) if not isinstance(value, torch.device) else value


class FakeCudaMode(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops_seen = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        self.ops_seen += 1
        name = func._schema.name
        on_fake, on_cpu = [], []

        def unwrap(value, check: bool = True):
            if isinstance(value, OnFakeCuda):
                on_fake.append(value)
                return value.elem
            if check and isinstance(value, torch.Tensor) and value.device.type == "cpu" and value.dim() > 0:
                on_cpu.append(value)
            return value

        if name in _CPU_INDICES_ALLOWED:  # x[cpu_index] on a CUDA tensor is allowed: leave the indices unchecked
            args = (unwrap(args[0]), tree_map(lambda v: unwrap(v, check=False), args[1]),
                    *tree_map(unwrap, tuple(args[2:])))
            kwargs = tree_map(unwrap, kwargs)
        else:
            args, kwargs = tree_map(unwrap, (args, kwargs))
        wanted = _device_of(kwargs.get("device"))
        wants_fake = wanted is not None and wanted.type == "cuda"
        if wants_fake:
            kwargs["device"] = _CPU
        if name not in _TRANSFERS and on_fake and on_cpu:
            shapes = ", ".join(f"cpu {tuple(t.shape)}" for t in on_cpu[:3])
            raise FakeDeviceError(f"Expected all tensors to be on the same device, but found at least two devices, "
                                  f"cuda:0 and cpu! ({name} got {len(on_fake)} tensor(s) on cuda:0 and {shapes})")
        if name == "aten::pin_memory":
            raise FakeDeviceError("pin_memory needs a real CUDA machine")
        out = func(*args, **kwargs)
        # In-place ops and copy_ return their destination: hand back the very wrapper it came in (or the plain CPU
        # tensor, for a copy from the fake device into CPU memory).
        wrappers = {id(w.elem): w for w in on_fake}
        if isinstance(out, torch.Tensor) and id(out) in wrappers:
            return wrappers[id(out)]
        if name in ("aten::copy_", "aten::_copy_from", "aten::set_") or (
                isinstance(out, torch.Tensor) and any(out is a for a in args if isinstance(a, torch.Tensor))):
            return out
        if name in ("aten::_to_copy", "aten::to"):
            to_fake = wants_fake or (wanted is None and bool(on_fake))
        else:
            to_fake = wants_fake or bool(on_fake)
        if not to_fake:
            return out
        return tree_map(lambda t: wrappers.get(id(t)) or OnFakeCuda(t)
                        if isinstance(t, torch.Tensor) and type(t) is torch.Tensor else t, out)


def _to_cpu(tensor: torch.Tensor, dtype=None, memory_format=None) -> torch.Tensor:
    extra = {} if memory_format is None else {"memory_format": memory_format}
    return torch.ops.aten._to_copy.default(tensor, dtype=dtype or tensor.dtype, device=_CPU, **extra)


class _IndexTheDevice(TorchFunctionMode):
    """`"cuda"` without an index makes torch ask the CUDA driver which device is current: say cuda:0 instead."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        def index(value):
            if isinstance(value, str) and value == "cuda" or isinstance(value, torch.device) and value == _CUDA:
                return FAKE
            return value

        args, kwargs = tree_map(index, (args, kwargs or {}))
        if func is torch.Tensor.tolist and isinstance(args[0], OnFakeCuda):
            return _to_cpu(args[0]).tolist()
        if func is torch.Tensor.numpy and isinstance(args[0], OnFakeCuda):
            raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                            "to host memory first.")
        if func in (torch.tensor, torch.as_tensor, torch.asarray) and _device_of(kwargs.get("device")) == FAKE:
            # these build the tensor in C++ before any dispatch (and would initialise CUDA): build, then move
            return func(*args, **{**kwargs, "device": _CPU}).to(FAKE)
        if func is torch.Tensor.to and len(args) > 1 and isinstance(args[1], OnFakeCuda):  # x.to(other_tensor)
            args, kwargs = (args[0], FAKE, args[1].dtype, *args[2:]), kwargs
        if func is torch.Tensor.cuda:
            return args[0].to(FAKE, non_blocking=kwargs.get("non_blocking", False))
        # Below Python, a fake-device tensor says it is on the CPU (so that autograd and the device guards never
        # call CUDA), and C++ would take `.cpu()` / `.to("cpu")` for no-ops: copy explicitly instead.
        if func in (torch.Tensor.cpu, torch.Tensor.to) and isinstance(args[0], OnFakeCuda):
            if func is torch.Tensor.cpu:
                device, dtype, memory_format = _CPU, None, kwargs.get("memory_format")
            else:
                parse = {key: value for key, value in kwargs.items() if key != "copy"}
                device, dtype, _, memory_format = torch._C._nn._parse_to(*args[1:], **parse)
            if device is not None and device.type == "cpu":
                return _to_cpu(args[0], dtype, memory_format)
        return func(*args, **kwargs)


class FakeCuda:
    """Handle returned by `fake_cuda()`: put tensors and modules on the fake device and check where results live."""

    device = FAKE

    def __init__(self, mode: FakeCudaMode):
        self.mode = mode

    def put(self, value):
        """A tensor (or every tensor in a nested list/tuple/dict) moved onto the fake device."""
        return tree_map(lambda t: t.to(FAKE) if isinstance(t, torch.Tensor) else t, value)

    def module(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module` with every parameter and buffer on the fake device (in place, like `.to`)."""
        return module.to(FAKE)

    @staticmethod
    def on_device(value) -> bool:
        """True when every tensor in `value` (a tensor, or nested list/tuple/dict/dataclass fields) is on the fake
        device."""
        return all(isinstance(t, OnFakeCuda) for t in _tensors(value))

    @staticmethod
    def real(value):
        """The CPU tensor behind a fake-device tensor (plain tensors unchanged)."""
        return tree_map(lambda t: t.elem if isinstance(t, OnFakeCuda) else t, value)


def _tensors(value) -> list[torch.Tensor]:
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    found = []
    tree_map(lambda t: found.append(t) if isinstance(t, torch.Tensor) else None, value)
    return found


@contextlib.contextmanager
def fake_cuda():
    """Inside: a pretend cuda:0 (see the module docstring). Yields a `FakeCuda` handle."""
    mode = FakeCudaMode()
    lazy_init = torch.cuda._lazy_init
    # `.to("cuda")` and `torch.zeros(..., device="cuda")` initialise CUDA before dispatching (and fail without a
    # driver); skip that here: the mode builds those tensors on the CPU.
    torch.cuda._lazy_init = lambda: None
    # nn.Module.to swaps in the moved parameter only when it cannot reuse the old one's storage type: say it
    # cannot, for the fake device, so modules end up holding OnFakeCuda parameters.
    compatible = torch._has_compatible_shallow_copy_type

    def compatible_here(input: torch.Tensor, from_: torch.Tensor) -> bool:
        return compatible(input, from_) and isinstance(input, OnFakeCuda) == isinstance(from_, OnFakeCuda)

    torch._has_compatible_shallow_copy_type = compatible_here
    try:
        with _IndexTheDevice(), mode:
            yield FakeCuda(mode)
    finally:
        torch.cuda._lazy_init = lazy_init
        torch._has_compatible_shallow_copy_type = compatible
