"""The audio-visual synchronisation classifier (seed 003 section 1) and its metrics.

model.py (architecture, checkpoints), data.py (shifted clips, dataset readers),
synthetic.py (generated event media), train.py (hard-negative contrastive training),
evaluate.py (31-offset protocol), metrics.py (P_sync, RelSync, AlignSync, IA, IT),
generated_eval.py (AVSyncD-style evaluation of generated videos).
"""
