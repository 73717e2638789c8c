"""Scores of generated images that need their own models (BG-DINO: Grounded-SAM-2 and DINOv2)."""
