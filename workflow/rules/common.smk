# Shared inputs of the rules: the model folder (when it is local or built) and the shard plan.
MODEL = config["model_spec"]
hrv.config.check_model_available(MODEL)  # a missing folder or uncached hub id fails here, not in a job
hrv.config.check_clip_available(config["clip"])  # the CLIP weights of the scoring jobs, likewise
SHARDS = shard_plan(config["hrv"], workflow.basedir)
SHARD_IDS = [f"{k:03d}" for k in range(len(SHARDS))]


def model_input(wildcards):
    """The model folder as an input when the workflow builds it or it is local, else nothing."""
    from pathlib import Path

    if MODEL["build"] or Path(MODEL["source"]).expanduser().is_dir():
        return {"model": MODEL["source"]}
    return {}
