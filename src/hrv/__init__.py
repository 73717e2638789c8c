"""Head Relevance Vectors (HRVs) for cross-attention heads of text-to-image diffusion models."""

__version__ = "0.1.0"
