from hrv.editing.scores import write_scores
from hrv.gpu import claim_gpu
from hrv.logs import log_to

p, out = snakemake.params, snakemake.output
with log_to(snakemake.log[0]), claim_gpu(enabled=p.device in ("auto", "cuda")):
    write_scores(
        [snakemake.input.manifest],
        out.scores,
        out.summary,
        out.table,
        out.html,
        out.bars,
        clip=p.clip,
        device=p.device,
    )
