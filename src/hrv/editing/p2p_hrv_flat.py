"""Ablation: P2P-HRV with every head's weight 1: the edited token keeps its own map, unweighted."""

from hrv.editing.p2p_hrv import P2PHRV

METHOD = P2PHRV(name="p2p_hrv_flat", flat=True)
