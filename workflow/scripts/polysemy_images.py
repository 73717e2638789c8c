from hrv.gpu import claim_gpu
from hrv.logs import log_to
from hrv.polysemy import render_case_files

p, out = snakemake.params, snakemake.output
# claim a free GPU of its own (Snakemake assigns no device ids); a no-op on CPU machines
with log_to(snakemake.log[0]), claim_gpu(enabled=p.device in ("auto", "cuda")):
    render_case_files(
        snakemake.input.get("model", p.model),
        snakemake.input.hrv,
        snakemake.input.cases,
        snakemake.wildcards.case,
        p.seeds,
        out.images,
        out.manifest,
        out.grid,
        sampling=p.sampling,
        methods=p.methods,
        batch_size=p.batch_size,
        device=p.device,
        dtype=p.dtype,
    )
