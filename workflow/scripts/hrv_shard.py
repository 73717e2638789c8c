from hrv.logs import log_to
from hrv.steps import run_shard

p = snakemake.params
with log_to(snakemake.log[0]):
    run_shard(
        snakemake.input.get("model", p.model),
        snakemake.input.concepts,
        p.prompts,
        snakemake.output.counts,
        seed=p.seed,
        sampling=p.sampling,
        device=p.device,
        dtype=p.dtype,
        **p.hrv,
    )
