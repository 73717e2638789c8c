"""SDEdit at noise strength 0.5 (the paper's lower SDEdit setting)."""

from hrv.editing.sdedit import SDEditMethod

METHOD = SDEditMethod(name="sdedit_0.5", strength=0.5)
