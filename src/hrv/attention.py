"""The cross-attention interface of the HRV tasks, kept for existing callers: now a thin layer on
``hrv.control`` (the one attention-control mechanism).

``Controller(registry, guidance, measure=, intervention=, capture=)`` turns its fields into edits:
a ``VoteMeasure`` records the conditional-half queries, an ``Intervention`` (= ``HeadFactors``)
multiplies the conditional half's post-softmax maps by per-head, per-token factors, ``capture``
receives the maps (after the factors). Only cross-attention sites get the processor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch

from hrv.control import CaptureMaps, Edit, HeadFactors, Layout
from hrv.control import Controller as _Controller
from hrv.control import installed as _installed
from hrv.heads import CALayer, HeadRegistry

Intervention = HeadFactors


class Controller(_Controller):
    """Evaluation counter and optional vote measure, intervention and capture of the CA sites."""

    def __init__(
        self,
        registry: HeadRegistry,
        guidance: bool = True,
        step: int = 0,
        measure: object | None = None,
        intervention: HeadFactors | None = None,
        capture: Callable[[CALayer, int, torch.Tensor], None] | None = None,
        batch_invariant: bool = False,
    ):
        super().__init__(layout=Layout(guidance=guidance), batch_invariant=batch_invariant)
        self.registry = registry
        self.step = step
        self.measure = measure
        self.intervention = intervention
        self.capture = capture
        self._wrapped: dict[str, tuple[object, Edit]] = {}

    @property
    def guidance(self) -> bool:
        return self.layout.guidance

    @guidance.setter
    def guidance(self, value: bool) -> None:
        self.layout = Layout(guidance=value, group=self.layout.group)

    def _wrap(self, name: str, obj, make: Callable[[], Edit]) -> Edit:
        cached = self._wrapped.get(name)
        if cached is None or cached[0] is not obj:
            cached = self._wrapped[name] = (obj, make())
        return cached[1]

    def current_edits(self) -> Sequence[Edit]:
        edits: list[Edit] = []
        if self.measure is not None:
            from hrv.accumulate import RecordQueries

            edits.append(self._wrap("measure", self.measure, lambda: RecordQueries(self.measure)))
        if self.intervention is not None:
            edits.append(self.intervention)
        if self.capture is not None:
            capture = self.capture
            edits.append(
                self._wrap("capture", capture, lambda: CaptureMaps(lambda site, t, p: capture(site.ca, t, p)))
            )
        return edits

    def kinds(self) -> set[str]:
        return {"cross"}


@contextlib.contextmanager
def installed(unet: torch.nn.Module, controller: _Controller) -> Iterator[_Controller]:
    """Install the processors and the evaluation counter; restore the originals on exit."""
    with _installed(unet, controller) as ctl:
        yield ctl
