from hrv.gpu import claim_gpu
from hrv.logs import log_to
from hrv.multiconcept.benchmark import score_job

p = snakemake.params
with log_to(snakemake.log[0]), claim_gpu(enabled=p.device in ("auto", "cuda")):
    score_job(
        snakemake.input.images,
        snakemake.output.scores,
        set_name=snakemake.wildcards.set,
        clip=p.clip,
        blip=p.blip,
        device=p.device,
    )
