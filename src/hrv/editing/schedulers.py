"""The editing stage's scheduler: one setting shared by every method of a comparison.

``pndm`` is SD v1.4's own scheduler (PNDM, PLMS steps only): the released P2P-HRV code samples
with it, 50 steps = 51 UNet evaluations. ``ddim`` is what the baselines' repositories sample with
(PnP, MasaCtrl, FPE, and diffusers' SDEdit examples): DDIM, eta 0, no clipping, 50 steps = 50
evaluations. Both are built from the model's own scheduler configuration (its betas, training
steps and timestep offset), so they differ only in the sampling rule; each pipeline call gets a
fresh instance, because schedulers keep state between steps.
"""

from __future__ import annotations

from hrv.errors import HRVInputError

SCHEDULERS = ("pndm", "ddim")


def editing_scheduler(pipe, name: str):
    """A new scheduler of kind ``name`` with the model's noise schedule."""
    from diffusers import DDIMScheduler, PNDMScheduler

    config = pipe.scheduler.config
    if name == "pndm":
        # SD v1.x/2.x ship exactly this; a model shipping another scheduler (SDXL: Euler) gets it too
        return PNDMScheduler.from_config(config, skip_prk_steps=True, set_alpha_to_one=False)
    if name == "ddim":
        # the baselines' DDIMScheduler(..., clip_sample=False, set_alpha_to_one=False), eta 0
        return DDIMScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False)
    raise HRVInputError(f"unknown editing scheduler {name!r}; use one of {', '.join(SCHEDULERS)}")


def assemble(cls, pipe, **overrides):
    """A ``cls`` pipeline on ``pipe``'s components (the same module objects: no copy of the
    weights), with ``overrides`` replacing components; the caller's pipeline is left as it was."""
    import inspect

    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in {**pipe.components, **overrides}.items() if k in accepted}
    if "requires_safety_checker" in accepted:
        kwargs["requires_safety_checker"] = False
    out = cls(**kwargs)
    out.set_progress_bar_config(disable=True)
    return out


def with_scheduler(pipe, name: str):
    """The same pipeline on the same components, with a fresh ``name`` scheduler."""
    return assemble(type(pipe), pipe, scheduler=editing_scheduler(pipe, name))


def evaluations(pipe, name: str, steps: int) -> int:
    """How many UNet evaluations ``steps`` sampling steps take (PNDM: steps + 1)."""
    scheduler = editing_scheduler(pipe, name)
    scheduler.set_timesteps(steps)
    return len(scheduler.timesteps)
