# The toy world (issue 6). `toy_checks` (in `rule all` when toy.enabled) measures the paper's claims
# on the shipped model with exact classifiers; `toy_neglect` (when toy.neglect.enabled too) measures
# how often each object of a two-object caption is missing under sd / A&E / A&E-HRV (issue 18).
# `train_toy_model` is not part of `rule all`: it re-trains the shipped resources/toy/model from
# scratch (stages 1-3 of hrv.toy.train, about 95 minutes on one core):
#   snakemake --cores 1 train_toy_model
# and copy results/toy/model over resources/toy/model to ship the new weights.

localrules:
    toy_neglect,


NEGLECT = config["toy"]["neglect"]
# the settings every image file of the measurement must share (the table refuses a mix)
NEGLECT_SETTINGS = {
    **{k: v for k, v in NEGLECT.items() if k not in ("enabled", "methods")},
    "guidance_scale": config["toy"]["guidance_scale"],
    "version": VERSION,
}


rule toy_checks:
    input:
        model=config["toy"]["model"],
        concepts=config["toy"]["concepts"],
    output:
        json=f"{OUT}/toy/checks/checks.json",
        npz=f"{OUT}/toy/checks/hrv.npz",
        heatmap=report(
            f"{OUT}/toy/checks/heatmap.png", caption="../report/toy_heatmap.rst", category="Toy world"
        ),
        weakening=report(
            f"{OUT}/toy/checks/weakening.png", caption="../report/toy_weakening.rst", category="Toy world"
        ),
        samples=report(
            f"{OUT}/toy/checks/samples.png", caption="../report/toy_samples.rst", category="Toy world"
        ),
    params:
        toy={k: v for k, v in config["toy"].items() if k not in ("enabled", "model", "concepts", "neglect")},
        version=VERSION,
    threads: 1
    log:
        f"{OUT}/logs/toy_checks.log",
    conda:
        "../../envs/diffusion.yaml"
    script:
        "../scripts/toy_checks.py"


rule toy_neglect_method:
    input:
        model=config["toy"]["model"],
        hrv=rules.toy_checks.output.npz,
    output:
        npz=f"{OUT}/toy/neglect/{{method}}.npz",
    wildcard_constraints:
        method="|".join(NEGLECT["methods"]),
    params:
        neglect=NEGLECT_SETTINGS,
    threads: 1
    log:
        f"{OUT}/logs/toy_neglect/{{method}}.log",
    conda:
        "../../envs/diffusion.yaml"
    script:
        "../scripts/toy_neglect_method.py"


rule toy_neglect:
    input:
        npz=expand(rules.toy_neglect_method.output.npz, method=NEGLECT["methods"]),
    output:
        json=f"{OUT}/toy/neglect/summary/neglect.json",
        csv=f"{OUT}/toy/neglect/summary/neglect.csv",
        bars=report(
            f"{OUT}/toy/neglect/summary/neglect.png",
            caption="../report/toy_neglect.rst",
            category="Toy world",
        ),
        grid=report(
            f"{OUT}/toy/neglect/summary/grid.png",
            caption="../report/toy_neglect_grid.rst",
            category="Toy world",
        ),
    params:
        neglect=NEGLECT_SETTINGS,
        methods=NEGLECT["methods"],
    log:
        f"{OUT}/logs/toy_neglect/summary.log",
    conda:
        "../../envs/diffusion.yaml"
    script:
        "../scripts/toy_neglect.py"


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
