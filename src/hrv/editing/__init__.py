"""Image editing (paper section 5.2): methods, benchmark sets, scores."""
