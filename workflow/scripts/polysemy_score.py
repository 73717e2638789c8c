from hrv.gpu import claim_gpu
from hrv.logs import log_to
from hrv.polysemy import score_files

p, out = snakemake.params, snakemake.output
with log_to(snakemake.log[0]), claim_gpu(enabled=p.device in ("auto", "cuda")):
    score_files(
        snakemake.input.manifests,
        snakemake.input.cases,
        out.scores,
        out.rates,
        out.table,
        out.bars,
        clip=p.clip,
        device=p.device,
    )
