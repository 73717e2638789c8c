"""SDEdit at noise strength 0.7 (the paper's higher SDEdit setting)."""

from hrv.editing.sdedit import SDEditMethod

METHOD = SDEditMethod(name="sdedit_0.7", strength=0.7)
