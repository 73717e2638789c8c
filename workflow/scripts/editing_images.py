from hrv.editing.stage import run_job
from hrv.gpu import claim_gpu
from hrv.logs import log_to

p, wc = snakemake.params, snakemake.wildcards
# one rule per kind of job: editing_source has no method wildcard and no HRV
method = getattr(wc, "method", "source")
with log_to(snakemake.log[0]), claim_gpu(enabled=p.device in ("auto", "cuda")):
    run_job(
        snakemake.input.get("model", p.model),
        snakemake.input.get("hrv"),
        p.pairs,
        method,
        int(wc.seed),
        snakemake.output.images,
        sampling=p.sampling,
        windows=p.get("windows", {}),
        token_map=p.token_map,
        batch_size=p.batch_size,
        device=p.device,
        dtype=p.dtype,
    )
