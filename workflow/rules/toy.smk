# The toy world's model (issue 6): re-train the shipped resources/toy/model from scratch.
# Not part of `rule all`: the demo uses the shipped weights. Re-train with
#   snakemake --cores 1 train_toy_model
# and copy results/toy/model over resources/toy/model to ship the new weights.


rule train_toy_model:
    output:
        model=directory("results/toy/model"),
    params:
        seed=0,  # the shipped model's recipe: hrv.toy.train.ToyTrainConfig defaults
        version=VERSION,
    threads: 1
    log:
        "results/logs/train_toy_model.log",
    conda:
        "../../envs/diffusion.yaml"
    script:
        "../scripts/train_toy_model.py"
