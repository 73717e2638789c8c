"""Ablation: P2P with P2P-HRV's longer self-attention replacement (0.9), nothing else changed."""

from hrv.editing.p2p import P2P

METHOD = P2P(name="p2p_self09", self_=0.9)
