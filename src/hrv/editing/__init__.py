"""Image editing (spec section 5): P2P, P2P-HRV, their ablations and the baselines on the
attention-control mechanism (``hrv.control``), one module per method (``hrv.editing.methods``
names them); benchmark sets, scores and the DAG stage."""

from hrv.editing.methods import MODULES, get_method
from hrv.editing.run import EditResult, edit_pairs, resolve_hrv, save_edit_outputs
from hrv.editing.tokens import TOKEN_MAPS, AlignedPair, align_pair

METHODS = tuple(MODULES)

__all__ = [
    "METHODS",
    "TOKEN_MAPS",
    "AlignedPair",
    "EditResult",
    "align_pair",
    "edit_pairs",
    "get_method",
    "resolve_hrv",
    "save_edit_outputs",
]
