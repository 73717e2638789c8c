# Image editing (paper section 5.2; docs/editing.md): P2P, P2P-HRV and the ablations on the five
# benchmark sets. One job per (set, method, seed, chunk of pairs) and one source job per (set, seed,
# chunk): adding a method, a seed or a set plans only the new jobs (and the tables that read them).
import re

from hrv.editing.sets import read_set, set_path
from hrv.editing.stage import chunk_pairs, job_paths, plan_jobs
from hrv.polysemy import hrv_source
from hrv.workflow import check_stage_concepts, stage_concepts, switch_off_hint

EDIT = config["editing"]
EDIT_SETS = {
    name: read_set(name, set_path(name))[: EDIT["max_pairs"]] for name in EDIT["sets"]
}
if not EDIT["enabled"]:  # stage switched off: no jobs
    EDIT_SETS = {}
elif any("hrv" in m for m in EDIT["methods"]):  # HRV methods steer the selected sets' concepts
    check_stage_concepts(
        "editing set",
        {name: pairs[0].concept for name, pairs in EDIT_SETS.items() if pairs},
        stage_concepts(EDIT["hrv"], config["hrv"]["concepts"]),
        switch_off_hint("editing", "sets"),
    )
EDIT_JOBS = plan_jobs(EDIT_SETS, EDIT["methods"], EDIT["seeds"], EDIT["pairs_per_job"])
# the full settings (hrv.config.resolve_stage_sampling) and the scheduler, which the source jobs and
# every method's jobs share
EDIT_SAMPLING = {**EDIT["sampling"], "scheduler": EDIT["scheduler"]}
# null = this run's HRVs; sd14 / sdxl = the released HRVs (imported by rule polysemy_import_hrv)
EDIT_HRV = hrv_source(EDIT["hrv"], f"{OUT}/hrv/hrv.npz", f"{OUT}/hrv/official", key="editing.hrv")
EDIT_HUMAN_SETS = [s for s in EDIT["human_sets"] if s in EDIT_SETS]
EDIT_TOY = EDIT["toy"]["enabled"] and config["toy"]["enabled"]
# a job's params hold its pairs as plain dicts: a change of a pair's text re-runs its jobs


localrules:
    editing_manifest,
    editing_grid,
    editing_human_sheet,


rule editing_source:
    input:
        unpack(model_input),
    output:
        images=directory(f"{OUT}/editing/{{set}}/source/seed{{seed}}/{{chunk}}"),
    params:
        pairs=lambda wc: chunk_pairs(EDIT_SETS[wc.set], wc.chunk),
        model=MODEL["source"],
        sampling=EDIT_SAMPLING,
        token_map=EDIT["token_map"],
        batch_size=EDIT["batch_size"],
        device=config["device"],
        dtype=config["dtype"] if config["dtype"] != "auto" else MODEL["dtype"],
        version=VERSION,
    wildcard_constraints:
        set="|".join(EDIT_SETS),
        seed=r"\d+",
        chunk=r"p\d+-\d+",
    resources:
        gpu=1,
    log:
        f"{OUT}/logs/editing/{{set}}_source_seed{{seed}}_{{chunk}}.log",
    conda:
        "../../envs/diffusion.yaml"
    script:
        "../scripts/editing_images.py"


rule editing_images:
    input:
        unpack(model_input),
        hrv=EDIT_HRV,
    output:
        images=directory(f"{OUT}/editing/{{set}}/{{method}}/seed{{seed}}/{{chunk}}"),
    params:
        pairs=lambda wc: chunk_pairs(EDIT_SETS[wc.set], wc.chunk),
        model=MODEL["source"],
        sampling=EDIT_SAMPLING,
        windows=lambda wc: EDIT["windows"].get(wc.method, {}),
        token_map=EDIT["token_map"],
        batch_size=EDIT["batch_size"],
        device=config["device"],
        dtype=config["dtype"] if config["dtype"] != "auto" else MODEL["dtype"],
        version=VERSION,
    wildcard_constraints:
        set="|".join(EDIT_SETS),
        method="|".join(re.escape(m) for m in EDIT["methods"]),
        seed=r"\d+",
        chunk=r"p\d+-\d+",
    resources:
        gpu=1,
    log:
        f"{OUT}/logs/editing/{{set}}_{{method}}_seed{{seed}}_{{chunk}}.log",
    conda:
        "../../envs/diffusion.yaml"
    script:
        "../scripts/editing_images.py"


rule editing_manifest:
    input:
        jobs=job_paths(EDIT_JOBS, OUT),
    output:
        manifest=f"{OUT}/editing/manifest.csv",
    params:
        version=VERSION,
    log:
        f"{OUT}/logs/editing/manifest.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/editing_manifest.py"


rule editing_score:
    input:
        manifest=rules.editing_manifest.output.manifest,
    output:
        scores=f"{OUT}/editing/clip_scores.csv",
        summary=f"{OUT}/editing/clip_summary.csv",
        table=f"{OUT}/editing/clip_table.csv",
        html=report(
            f"{OUT}/editing/clip_table.html",
            caption="../report/editing_table.rst",
            category="Image editing",
            subcategory="CLIP",
            labels={"figure": "table"},
        ),
        bars=report(
            f"{OUT}/editing/clip_bars.png",
            caption="../report/editing_bars.rst",
            category="Image editing",
            subcategory="CLIP",
            labels={"figure": "bar chart"},
        ),
    params:
        clip=config["clip"],
        device=config["device"],
        version=VERSION,
    resources:
        gpu=1,
    log:
        f"{OUT}/logs/editing/score.log",
    conda:
        "../../envs/clip.yaml"
    script:
        "../scripts/editing_score.py"


rule editing_grid:
    input:
        manifest=rules.editing_manifest.output.manifest,
    output:
        png=report(
            f"{OUT}/editing/{{set}}/grid.png",
            caption="../report/editing_grid.rst",
            category="Image editing",
            subcategory="images",
            labels={"set": "{set}"},
        ),
    params:
        seed=EDIT["seeds"][0],
        version=VERSION,
    wildcard_constraints:
        set="|".join(EDIT_SETS),
    log:
        f"{OUT}/logs/editing/grid_{{set}}.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/editing_grid.py"


rule editing_human_sheet:
    input:
        manifest=rules.editing_manifest.output.manifest,
    output:
        sheet=f"{OUT}/editing/human/sheet.csv",
        key=f"{OUT}/editing/human/key.csv",
        page=f"{OUT}/editing/human/index.html",
        images=directory(f"{OUT}/editing/human/images"),
    params:
        sets=EDIT_HUMAN_SETS,
        seed=EDIT["human_seed"],
        version=VERSION,
    log:
        f"{OUT}/logs/editing/human_sheet.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/editing_human_sheet.py"


rule editing_toy:
    input:
        model=config["toy"]["model"],
        hrv=f"{OUT}/toy/checks/hrv.npz",
    output:
        csv=f"{OUT}/toy/editing/edits.csv",
        table=f"{OUT}/toy/editing/table.csv",
        html=report(
            f"{OUT}/toy/editing/table.html",
            caption="../report/editing_toy.rst",
            category="Toy world",
        ),
    params:
        toy=EDIT["toy"],
        steps=EDIT["toy"]["steps"] or config["toy"]["steps"],
        guidance_scale=config["toy"]["guidance_scale"],
        version=VERSION,
    threads: 1
    log:
        f"{OUT}/logs/editing/toy.log",
    conda:
        "../../envs/diffusion.yaml"
    script:
        "../scripts/editing_toy.py"


EDIT_TARGETS = [
    rules.editing_score.output,
    expand(rules.editing_grid.output.png, set=list(EDIT_SETS)),
    rules.editing_human_sheet.output
    if EDIT_HUMAN_SETS and "p2p_hrv" in EDIT["methods"] and len(EDIT["methods"]) > 1
    else [],
    rules.editing_toy.output if EDIT_TOY else [],
] if EDIT["enabled"] else []
