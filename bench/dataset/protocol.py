"""Constants of the evaluation protocol that data, ops and metrics share (docs/protocol.md)."""

IGNORE = 255  # label of ignored pixels in masks and seed maps
EVAL_SIZE = 224  # score maps and ground truth are compared at EVAL_SIZE x EVAL_SIZE (the reference's frame)
