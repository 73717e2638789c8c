from hrv.logs import log_to
from hrv.toy.train import ToyTrainConfig, train_and_save

with log_to(snakemake.log[0]):
    train_and_save(
        snakemake.output.model, ToyTrainConfig(seed=snakemake.params.seed, threads=snakemake.threads)
    )
