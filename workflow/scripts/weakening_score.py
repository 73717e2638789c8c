from hrv.gpu import claim_gpu
from hrv.logs import log_to
from hrv.scoring import write_scores

p = snakemake.params
with log_to(snakemake.log[0]), claim_gpu(enabled=p.device in ("auto", "cuda")):
    write_scores(
        snakemake.input.jobs, snakemake.output.scores, snakemake.output.table, clip=p.clip, device=p.device
    )
