"""Text embeddings of a trainer checkpoint computed by open_clip itself, for
test/finetune-full-trainer.test.ts to compare with what clipserve serves after converting it.

argv: <base model dir (open_clip local-dir)> <checkpoint (epoch_N.pt)>; stdin: a JSON list of
texts; stdout: a JSON list of L2-normalised embeddings.
"""
import json
import sys

import torch
import open_clip
from open_clip.factory import load_checkpoint


def main():
    base_dir, checkpoint = sys.argv[1], sys.argv[2]
    texts = json.load(sys.stdin)
    model = open_clip.create_model(f"local-dir:{base_dir}", load_weights=False)
    # weights_only=False: torch 1.13's restricted unpickler lacks BINFLOAT, which the trainer's
    # own checkpoint (optimizer hyperparameters) contains; this file was just written by the test.
    load_checkpoint(model, checkpoint, weights_only=False)
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{base_dir}")
    with torch.no_grad():
        features = model.encode_text(tokenizer(texts), normalize=True)
    json.dump(features.tolist(), sys.stdout)


if __name__ == "__main__":
    main()
