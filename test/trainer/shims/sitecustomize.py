"""Import-time shims that let Debian 12's torch 1.13 (CPU) import and run this open_clip /
open_clip_train revision, which targets a newer torch. Loaded by Python at start-up because this
directory is on PYTHONPATH (site imports `sitecustomize`), so the processes torchrun spawns get
them too. Nothing here patches an upstream file or changes what upstream code computes:

- `torch.compiler.disable` (torch >= 2.1): a decorator open_clip.loss applies at import; a no-op
  here, as it is on any torch that does not compile.
- `torch.amp.GradScaler` (torch >= 2.3): named in annotations at import; only the fp16/amp
  precisions construct one, and the test trains in fp32.
- `webdataset` (not packaged by Debian): imported by open_clip_train.data at module level; the
  csv dataset type never uses it, so every name is a class that refuses to be used.
- `torch.nn.functional.scaled_dot_product_attention` (torch >= 2.0): open_clip's attention calls
  it; the reference formula from torch's documentation (softmax(q kᵀ · scale + mask) v).
- torchrun's `Std.from_str` (torch 1.13 on Python 3.11): `Std` is an IntFlag, and Python 3.11
  no longer yields its zero member NONE when iterating, so the default `--redirects 0 --tee 0`
  becomes None and torchrun crashes before starting a worker (fixed in torch 2.0); the same
  mapping done by value.
- `safetensors.torch.load_file` (not packaged by Debian): open_clip's loader for
  `*.safetensors` weights; a strict reader of the documented format (8-byte little-endian header
  length, JSON header, raw little-endian data).
"""
import json
import sys
import types

import torch

if not hasattr(torch, "compiler"):
    compiler = types.ModuleType("torch.compiler")

    def disable(fn=None, recursive=True):
        if fn is None:
            return lambda f: f
        return fn

    compiler.disable = disable
    torch.compiler = compiler
    sys.modules["torch.compiler"] = compiler

import math  # noqa: E402

import torch.nn.functional as F  # noqa: E402

if not hasattr(F, "scaled_dot_product_attention"):
    def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
        L, S = query.size(-2), key.size(-2)
        scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
        attn = (query @ key.transpose(-2, -1)) * scale
        if is_causal:
            causal = torch.ones(L, S, dtype=torch.bool, device=query.device).triu(1)
            attn = attn.masked_fill(causal, float("-inf"))
        if attn_mask is not None:
            attn = attn.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else attn + attn_mask
        attn = attn.softmax(dim=-1)
        if dropout_p > 0.0:
            attn = F.dropout(attn, p=dropout_p)
        return attn @ value

    F.scaled_dot_product_attention = scaled_dot_product_attention

import torch.amp  # noqa: E402

if not hasattr(torch.amp, "GradScaler"):
    torch.amp.GradScaler = torch.cuda.amp.GradScaler


try:
    from torch.distributed.elastic.multiprocessing import api as _mp_api

    if [s for s in _mp_api.Std] and _mp_api.Std.NONE not in list(_mp_api.Std):
        def _from_str(cls, vm):
            import re as _re
            if _re.match(_mp_api._VALUE_REGEX, vm):
                return cls(int(vm))
            if _re.match(_mp_api._MAPPING_REGEX, vm):
                return {int(i): cls(int(v)) for i, v in (m.split(":") for m in vm.split(","))}
            raise ValueError(f"{vm} does not match: <{_mp_api._VALUE_REGEX}> or <{_mp_api._MAPPING_REGEX}>")

        _mp_api.Std.from_str = classmethod(_from_str)
except ImportError:
    pass


class _StubModule(types.ModuleType):
    """A module whose every attribute is a class that raises when used."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        module = self.__name__

        class Unavailable:
            def __init__(self, *args, **kwargs):
                raise RuntimeError(f"{module}.{name} is a test shim: webdataset is not installed")

            def __init_subclass__(cls, **kwargs):
                pass

        Unavailable.__name__ = name
        setattr(self, name, Unavailable)
        return Unavailable


try:
    import webdataset  # noqa: F401
except ImportError:
    for mod in ("webdataset", "webdataset.filters", "webdataset.tariterators"):
        sys.modules[mod] = _StubModule(mod)
    sys.modules["webdataset"].filters = sys.modules["webdataset.filters"]
    sys.modules["webdataset"].tariterators = sys.modules["webdataset.tariterators"]

try:
    import safetensors.torch  # noqa: F401
except ImportError:
    _DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64, "I64": torch.int64}

    def load_file(filename, device="cpu"):
        with open(filename, "rb") as f:
            data = f.read()
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + n])
        body = memoryview(data)[8 + n:]
        out = {}
        end_max = 0
        for key, info in header.items():
            if key == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            dtype = _DTYPES[info["dtype"]]
            t = torch.frombuffer(bytearray(body[begin:end]), dtype=dtype) if end > begin else torch.empty(0, dtype=dtype)
            expected = 1
            for d in info["shape"]:
                expected *= d
            if t.numel() != expected:
                raise ValueError(f"{filename}: tensor {key} has {t.numel()} values for shape {info['shape']}")
            out[key] = t.reshape(info["shape"]).to(device)
            end_max = max(end_max, end)
        if end_max != len(body):
            raise ValueError(f"{filename}: {len(body) - end_max} bytes after the last tensor")
        return out

    st = types.ModuleType("safetensors")
    st_torch = types.ModuleType("safetensors.torch")
    st_torch.load_file = load_file
    st.torch = st_torch
    sys.modules["safetensors"] = st
    sys.modules["safetensors.torch"] = st_torch
