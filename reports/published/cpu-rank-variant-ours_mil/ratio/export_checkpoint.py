"""Export a checkpoint of an interrupted training run as the model's weights (what the train stage exports at its end).
Usage (cwd + PYTHONPATH = the checkout): export.py MODEL SEED CHECKPOINT.pt"""
import sys
from pipeline.config import load_params, to_plain
from pipeline.engine import export_weights, safe_load
from pipeline.layout import Layout, build_translator
model, seed, ckpt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
params = load_params(); layout = Layout()
t = build_translator(params, model)
state = safe_load(ckpt)  # weights_only=True, as the engine reads its checkpoints
t.load_state_dict(state["model"])
entry = params.models[model]
export_weights(t, layout.weights(model, seed), {"model": model, "method": entry.method, "seed": seed,
               "step": state["step"], "image_size": params.data.resolution, "has_mask": t.has_mask,
               "config": to_plain(params.method_config(model)), "profile": params.profile,
               "note": f"exported from {ckpt} (training stopped there)"})
print("exported step", state["step"], "->", layout.weights(model, seed))
