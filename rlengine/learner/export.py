"""Writing the policy's weights for the rollout engines without copying them.

``safetensors.torch.save_file`` turns every tensor into ``bytes`` before writing (a second copy of
the model in memory, on top of the copy made to unshare ZeRO's flat buffers). A weight sync runs
every step, so ``write_safetensors`` streams each tensor's memory straight into the file instead.

Format (https://github.com/huggingface/safetensors, "Format"): an 8-byte little-endian header
length N, N bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}`` (offsets
into the data that follows, padded here with spaces to a multiple of 8), then the tensors' bytes
back to back in header order.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Iterator
from typing import Any

import torch

SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def write_safetensors(tensors: dict[str, torch.Tensor], path: str) -> None:
    """Write ``tensors`` to ``path`` in the safetensors format, one tensor at a time.

    CPU tensors that are contiguous (views into a flat buffer included) are written from their own
    memory; other tensors are made contiguous / moved to the CPU one at a time.
    """
    entries = [(name, list(t.shape), t.dtype) for name, t in tensors.items()]
    write_safetensors_streamed(entries, [list(tensors.items())], path)


def write_safetensors_streamed(
    entries: list[tuple[str, list[int], torch.dtype]],
    parts: Iterable[list[tuple[str, torch.Tensor]]],
    path: str,
    metadata: dict[str, str] | None = None,
) -> int:
    """Write a safetensors file whose header comes from ``entries`` (name, shape, dtype) and whose
    tensors arrive in ``parts``, a few at a time and in ``entries`` order: a caller that gathers
    ZeRO-3 parameters bucket by bucket never holds the whole model. ``metadata`` (string to string,
    e.g. ``{"format": "pt"}``, which transformers asks for) goes in the header. Returns the bytes written.

    Raises:
        TypeError: a dtype safetensors cannot store.
        ValueError: the parts do not deliver exactly ``entries``, in order and with their shapes.
    """
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, shape, dtype in entries:
        if dtype not in SAFETENSORS_DTYPES:
            raise TypeError(f"write_safetensors: {name} has dtype {dtype}, which safetensors cannot store")
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    expected = iter(entries)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for part in parts:
            for name, tensor in part:
                want = next(expected, None)
                if want is None or want[0] != name or list(tensor.shape) != list(want[1]):
                    raise ValueError(f"write_safetensors: got {name} {list(tensor.shape)}, expected {want}")
                if tensor.numel():
                    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
                    f.write(memoryview(flat.view(torch.uint8).numpy()))
        missing = next(expected, None)
        if missing is not None:
            raise ValueError(f"write_safetensors: {missing[0]} and later tensors never arrived")
    return 8 + len(blob) + offset


def full_shape(tensor: torch.Tensor) -> list[int]:
    """The shape of the whole tensor, also for a ZeRO-3 parameter (whose ``shape`` is its shard's)."""
    return list(getattr(tensor, "ds_shape", tensor.shape))


def policy_tensors(model: torch.nn.Module, tied: bool) -> list[tuple[str, torch.Tensor]]:
    """The HF-named tensors the engines load: the state dict's parameters and persistent buffers,
    without ``lm_head.weight`` when it is tied to the embedding. No data is touched (under ZeRO-3
    the parameters stay partitioned)."""
    by_name = {**dict(model.named_buffers()), **dict(model.named_parameters(remove_duplicate=False))}
    return [(name, by_name[name]) for name in model.state_dict() if not (tied and name == "lm_head.weight")]


def gathered_buckets(
    named: list[tuple[str, torch.Tensor]], bucket_bytes: int, zero3: bool
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """``named`` in consecutive buckets of at most ``bucket_bytes`` (a larger tensor alone). Under
    ZeRO-3 each bucket is all-gathered while the consumer holds it and partitioned again after,
    so at most one bucket of full parameters exists at a time. A collective: every rank iterates."""
    import deepspeed

    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in [*named, ("", None)]:
        nbytes = 0 if tensor is None else math.prod(full_shape(tensor)) * tensor.element_size()
        if bucket and (tensor is None or size + nbytes > bucket_bytes):
            params = [t for _, t in bucket if isinstance(t, torch.nn.Parameter)]
            with deepspeed.zero.GatheredParameters(params, enabled=zero3), torch.no_grad():
                yield [(n, t.detach()) for n, t in bucket]
            bucket, size = [], 0
        if tensor is not None:
            bucket.append((name, tensor))
            size += nbytes


class Counted:
    """An iterable that counts the items it has handed out (``count``)."""

    def __init__(self, items: Iterable[Any]) -> None:
        self.items, self.count = items, 0

    def __iter__(self) -> Iterator[Any]:
        for item in self.items:
            self.count += 1
            yield item
