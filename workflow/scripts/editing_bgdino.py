from hrv.gpu import claim_gpu
from hrv.logs import log_to
from hrv.scores.bgdino import BGDinoSettings
from hrv.scores.bgdino_run import score_manifest

p, wc = snakemake.params, snakemake.wildcards
with log_to(snakemake.log[0]), claim_gpu(enabled=p.device in ("auto", "cuda")):
    settings = BGDinoSettings(
        **p.models,
        box_threshold=p.box_threshold,
        text_threshold=p.text_threshold,
        batch_size=p.batch_size,
        center_crop=p.center_crop,
        device=p.device,
    )
    score_manifest(
        snakemake.input.manifest, snakemake.output.scores, settings, sets=[wc.set], methods=[wc.method]
    )
