from hrv.gpu import claim_gpu
from hrv.logs import log_to
from hrv.steps import run_shard

p = snakemake.params
# claim a free GPU of its own (Snakemake assigns no device ids); a no-op on CPU machines
with log_to(snakemake.log[0]), claim_gpu(enabled=p.device in ("auto", "cuda")):
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
