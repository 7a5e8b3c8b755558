"""The known_1000 facts a model answers right: top-1 token == first token of the attribute.

    python docs/results/select_known.py smollm2-135m docs/results/smollm2_known_correct.json

Writes the correct records (ROME's known_1000.json format, in file order) as a JSON list,
which `nbtools sweep layers --prompts FILE` reads.
"""

import json
import sys

import torch

import nbtools
from nbtools.facts import default_known_path


def main(model: str, out: str, batch: int = 32) -> None:
    lab = nbtools.load(model)
    tok = lab.tokenizer
    records = json.loads(default_known_path().read_text())
    correct = []
    for start in range(0, len(records), batch):
        part = records[start:start + batch]
        enc = [tok(r["prompt"]).input_ids for r in part]
        width = max(map(len, enc))
        ids = torch.full((len(enc), width), tok.pad_token_id)
        mask = torch.zeros_like(ids)
        for i, e in enumerate(enc):
            ids[i, :len(e)], mask[i, :len(e)] = torch.tensor(e), 1
        with torch.no_grad():
            logits = lab.hf_model(input_ids=ids, attention_mask=mask).logits
        top = logits[torch.arange(len(enc)), mask.sum(1) - 1].argmax(-1)
        for r, t in zip(part, top.tolist(), strict=True):
            # the attribute's first token, without the BOS that some tokenizers (Gemma) prepend
            first = tok(" " + r["attribute"].lstrip(), add_special_tokens=False).input_ids[0]
            if t == first:
                correct.append(r)
    with open(out, "w") as f:
        json.dump(correct, f, indent=0)
    print(f"{model}: {len(correct)} of {len(records)} known_1000 prompts answered right")


if __name__ == "__main__":
    main(*sys.argv[1:3])
