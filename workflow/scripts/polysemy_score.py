from hrv.gpu import claim_gpu
from hrv.logs import log_to
from hrv.polysemy import score_files

p = snakemake.params
with log_to(snakemake.log[0]), claim_gpu(enabled=p.device in ("auto", "cuda")):
    score_files(
        snakemake.input.manifests,
        snakemake.input.cases,
        snakemake.output.scores,
        clip=p.clip,
        device=p.device,
    )
