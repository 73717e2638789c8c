# Ordered weakening (spec section 2): MoRHF / LeRHF / random sweeps, CLIP scores, curves, grids.
# One sampling job per (experiment, order, seed, batch of k values): adding a k value, a seed or an
# experiment plans only the new jobs (and the scoring and figures that read them).
from hrv.experiments import job_dirs, load_experiments, plan_jobs, resolve_k, truncated
from hrv.polysemy import hrv_source
from hrv.workflow import stage_concepts, switch_off_hint

WEAK = config["weakening"]
if WEAK["enabled"]:
    # null = this run's HRVs; sd14 / sdxl = the released HRVs (imported by rule polysemy_import_hrv)
    WEAK_HRV = hrv_source(WEAK["hrv"], f"{OUT}/hrv/hrv.npz", f"{OUT}/hrv/official", key="weakening.hrv")
    WEAK_EXPERIMENTS = {
        e.name: truncated(e, WEAK["max_items"])
        for e in load_experiments(
            WEAK["experiments_file"],
            WEAK["extra_experiments"],
            select=WEAK["experiments"],
            concepts=stage_concepts(WEAK["hrv"], config["hrv"]["concepts"]),
            missing_hint=switch_off_hint("weakening", "experiments"),
        )
    }
    WEAK_K = resolve_k(WEAK, MODEL, WEAK["hrv"])
    WEAK_JOBS = plan_jobs(
        list(WEAK_EXPERIMENTS.values()), WEAK["orders"], WEAK["seeds"], WEAK_K, WEAK["k_batch"]
    )
else:  # stage switched off: no jobs
    WEAK_HRV, WEAK_EXPERIMENTS, WEAK_K, WEAK_JOBS = f"{OUT}/hrv/hrv.npz", {}, [], []
WEAK_SAMPLING = WEAK["sampling"]  # the full settings (hrv.config.resolve_stage_sampling)

# Cheap rules run on the submitting node under a cluster executor (profiles/slurm).
localrules:
    weakening_curves,
    weakening_grid,
    weakening_overview,


wildcard_constraints:
    experiment=r"[A-Za-z0-9_.-]+",


# Cheap figure/table rules run on the submitting node under a cluster executor (profiles/slurm).
localrules:
    weakening_curves,
    weakening_grid,
    weakening_overview,


rule weaken:
    input:
        unpack(model_input),
        hrv=WEAK_HRV,
    output:
        images=directory(f"{OUT}/weakening/{{experiment}}/{{order}}/seed{{seed}}/{{ks}}"),
    params:
        experiment=lambda wc: WEAK_EXPERIMENTS[wc.experiment].to_dict(),
        model=MODEL["source"],
        sampling=WEAK_SAMPLING,
        factor=WEAK["factor"],
        random_seed=lambda wc: WEAK["random_seed"] if wc.order == "random" else None,
        device=config["device"],
        dtype=config["dtype"] if config["dtype"] != "auto" else MODEL["dtype"],
        version=VERSION,
    wildcard_constraints:
        order="MoRHF|LeRHF|random",
        seed=r"\d+",
        ks=r"ks\d+(-\d+)*",
    resources:
        gpu=1,
    log:
        f"{OUT}/logs/weaken/{{experiment}}_{{order}}_seed{{seed}}_{{ks}}.log",
    conda:
        "../../envs/diffusion.yaml"
    script:
        "../scripts/weakening_sample.py"


rule weakening_score:
    input:
        jobs=lambda wc: job_dirs(WEAK_JOBS, OUT, wc.experiment),
    output:
        scores=f"{OUT}/weakening/{{experiment}}/clip_scores.csv",
        table=f"{OUT}/weakening/{{experiment}}/clip_table.csv",
    params:
        clip=config["clip"],
        device=config["device"],
        version=VERSION,
    resources:
        gpu=1,
    log:
        f"{OUT}/logs/weakening_score_{{experiment}}.log",
    conda:
        "../../envs/diffusion.yaml"
    script:
        "../scripts/weakening_score.py"


rule weakening_curves:
    input:
        table=rules.weakening_score.output.table,
        reference=lambda wc: WEAK["reference"].get(wc.experiment, []),
    output:
        png=report(
            f"{OUT}/weakening/{{experiment}}/curves.png",
            caption="../report/weakening_curves.rst",
            category="Ordered weakening",
            subcategory="Curves",
            labels={"experiment": "{experiment}"},
        ),
    params:
        version=VERSION,
    log:
        f"{OUT}/logs/weakening_curves_{{experiment}}.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/weakening_curves.py"


rule weakening_grid:
    input:
        jobs=lambda wc: job_dirs(WEAK_JOBS, OUT, wc.experiment, seeds=WEAK["seeds"][:1]),
    output:
        png=report(
            f"{OUT}/weakening/{{experiment}}/grid.png",
            caption="../report/weakening_grid.rst",
            category="Ordered weakening",
            subcategory="Image grids",
            labels={"experiment": "{experiment}"},
        ),
    params:
        prompts=list(range(WEAK["grid_prompts"])),
        seed=WEAK["seeds"][0],
        version=VERSION,
    log:
        f"{OUT}/logs/weakening_grid_{{experiment}}.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/weakening_grid.py"


rule weakening_overview:
    input:
        tables=expand(f"{OUT}/weakening/{{experiment}}/clip_table.csv", experiment=list(WEAK_EXPERIMENTS)),
        hrv=WEAK_HRV,
    output:
        png=report(
            f"{OUT}/weakening/overview.png",
            caption="../report/weakening_overview.rst",
            category="Ordered weakening",
            subcategory="Summary",
        ),
        areas=f"{OUT}/weakening/area_summary.csv",
        areas_png=report(
            f"{OUT}/weakening/area_summary.png",
            caption="../report/weakening_areas.rst",
            category="Ordered weakening",
            subcategory="Summary",
        ),
    params:
        experiments=list(WEAK_EXPERIMENTS),
        version=VERSION,
    log:
        f"{OUT}/logs/weakening_overview.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/weakening_overview.py"
