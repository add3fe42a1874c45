"""Parses command lines the way the real trainer does, for test/finetune-full-trainer.test.ts.

stdin: a JSON list of {"trainer": [...], "torchrun": [...] | null}; each "trainer" list goes
through open_clip_train.params.parse_args (upstream's own parser, from PYTHONPATH), each
"torchrun" list (when torch is importable) through torch.distributed.run's own parser.
stdout: a JSON list of {"args": {...}} or {"error": "..."} per entry, in order.
"""
import contextlib
import io
import json
import sys

from open_clip_train.params import parse_args


def plain(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return repr(value)


def parse(fn, argv):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = fn(argv)
    except SystemExit as e:
        return {"error": f"exit {e.code}: {err.getvalue().strip()}"}
    except Exception as e:  # noqa: BLE001 - reported to the test as it is
        return {"error": f"{type(e).__name__}: {e}"}
    return {"args": {k: plain(v) for k, v in vars(ns).items()}}


def main():
    entries = json.load(sys.stdin)
    try:
        from torch.distributed.run import parse_args as torchrun_parse_args
    except ImportError:
        torchrun_parse_args = None
    out = []
    for entry in entries:
        result = {"trainer": parse(parse_args, entry["trainer"])}
        if entry.get("torchrun") is not None and torchrun_parse_args is not None:
            result["torchrun"] = parse(torchrun_parse_args, entry["torchrun"])
        out.append(result)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
