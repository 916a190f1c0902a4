"""The transfer track: source-free domain adaptation (SFDA) of WSOL models.

A cell is (adaptation, source dataset, target dataset, seed): a WSOL model trained on the
source (by default the stage-1 CAM classifier), adapted from the target's unlabelled
training images without any source data, evaluated on the target's test split with the
target's metrics. See `bench.transfer.cell` (the cell and the two reference rows),
`bench.transfer.adaptation` (the API of `adaptations/*.py`), `bench.transfer.data` (the
guards) and docs/fidelity_transfer.md (the methods against their papers)."""
from bench.transfer.adaptation import (AdaptContext, Adaptation, SourceOnly, adapt_loop, all_adaptations,
                                       freeze_hypothesis, get_adaptation, register_adaptation)
from bench.transfer.cell import (TARGET_SUPERVISED, pair_name, run_source_only, run_target_supervised,
                                 run_transfer_cell, transfer_cell_config, transfer_result_path)
from bench.transfer.data import LabelAccessError, ReadGuard, SourceAccessError, UnlabelledView

# The declared pairs (source, target): GlaS <-> Camelyon16 both ways as in the SFDA-of-WSOL
# papers (PixelCAM, SFDA-DeP: cross-organ histology), and the embedded pair, generated on the
# spot, that runs on a fresh machine.
TRANSFER_PAIRS: tuple[tuple[str, str], ...] = (
    ("synth-tissue", "synth-tissue-shifted"),
    ("glas", "camelyon16"),
    ("camelyon16", "glas"),
)
REFERENCE_ROWS = (SourceOnly.name, TARGET_SUPERVISED)  # lower and upper reference of every pair

__all__ = ["TRANSFER_PAIRS", "REFERENCE_ROWS", "TARGET_SUPERVISED", "AdaptContext", "Adaptation", "SourceOnly",
           "adapt_loop", "all_adaptations", "freeze_hypothesis", "get_adaptation", "register_adaptation",
           "pair_name", "run_source_only", "run_target_supervised", "run_transfer_cell", "transfer_cell_config",
           "transfer_result_path", "LabelAccessError", "ReadGuard", "SourceAccessError", "UnlabelledView"]
