from hrv.gpu import claim_gpu
from hrv.logs import log_to
from hrv.multiconcept.benchmark import run_job

p, wc = snakemake.params, snakemake.wildcards
with log_to(snakemake.log[0]), claim_gpu(enabled=p.device in ("auto", "cuda")):
    run_job(
        snakemake.input.get("model", p.model),
        snakemake.input.get("hrv"),
        p.prompts,
        wc.method,
        int(wc.seed),
        snakemake.output.images,
        settings=p.settings,
        sampling=p.sampling,
        concept=p.concept,
        subword=p.subword,
        batch_size=p.batch_size,
        device=p.device,
        dtype=p.dtype,
    )
