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
import struct

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
    header: dict[str, dict] = {}
    offset = 0
    for name, tensor in tensors.items():
        if tensor.dtype not in SAFETENSORS_DTYPES:
            raise TypeError(
                f"write_safetensors: {name} has dtype {tensor.dtype}, which safetensors cannot store"
            )
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for tensor in tensors.values():
            if tensor.numel():
                flat = tensor.detach().to("cpu").contiguous().reshape(-1)
                f.write(memoryview(flat.view(torch.uint8).numpy()))
