from hrv.gpu import claim_gpu
from hrv.logs import log_to
from hrv.weakening import parse_chunk_label, run_job

p, wc = snakemake.params, snakemake.wildcards
with log_to(snakemake.log[0]), claim_gpu(enabled=p.device in ("auto", "cuda")):
    run_job(
        snakemake.input.get("model", p.model),
        snakemake.input.hrv,
        p.experiment,
        wc.order,
        int(wc.seed),
        parse_chunk_label(wc.ks),
        snakemake.output.images,
        sampling=p.sampling,
        factor=p.factor,
        random_seed=p.random_seed or 0,
        device=p.device,
        dtype=p.dtype,
    )
