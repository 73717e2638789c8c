"""Multi-concept generation (paper section 5.3): Attend-and-Excite, A&E-HRV and A&E's metrics.

``excite`` samples a prompt with one method (``sd``, ``ae``, ``ae_released``, ``ae_hrv``,
``ae_uniform``); ``hrv.multiconcept.metrics`` scores images as A&E's scripts do. See
docs/multiconcept.md.
"""

from hrv.multiconcept.generate import ExciteResult, excite, load_hrv, load_pipeline

__all__ = ["ExciteResult", "excite", "load_hrv", "load_pipeline"]
