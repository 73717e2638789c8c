# BG-DINO (spec section 5 "Scores"; docs/bgdino.md): background preservation of the object edits.
# One job per (object set, method) over the editing stage's manifest, then the tables and the
# CLIP-against-BG-DINO scatter (the paper's Figure 7).
from pathlib import Path

from hrv.scores.tiny import TINY_DIR, model_source

BGD = config["bgdino"]
BGD_SETS = [s for s in BGD["sets"] if s in EDIT_SETS]
BGD_MODELS = {role: model_source(BGD[role], role) for role in ("detector", "segmenter", "embedder")}
# model folders are inputs: the tiny models' (the workflow builds them) and local ones (not hub ids)
BGD_FOLDERS = sorted(
    {
        TINY_DIR if v.startswith(TINY_DIR) else v
        for v in BGD_MODELS.values()
        if v.startswith(TINY_DIR) or Path(v).expanduser().is_dir()
    }
)


localrules:
    build_tiny_gsam,
    editing_bgdino_table,


rule build_tiny_gsam:
    output:
        models=directory(TINY_DIR),
    params:
        seed=0,
        version=VERSION,
    log:
        "results/logs/build_tiny_gsam.log",
    conda:
        "../../envs/gsam.yaml"
    script:
        "../scripts/build_tiny_gsam.py"


rule editing_bgdino:
    input:
        models=BGD_FOLDERS,
        manifest=rules.editing_manifest.output.manifest,
    output:
        scores=directory(f"{OUT}/editing/bgdino/{{set}}/{{method}}"),
    params:
        models=BGD_MODELS,
        box_threshold=BGD["box_threshold"],
        text_threshold=BGD["text_threshold"],
        batch_size=BGD["batch_size"],
        center_crop=BGD["center_crop"],
        device=config["device"],
        version=VERSION,
    wildcard_constraints:
        set="|".join(BGD_SETS) or "no-set",
        method="|".join(EDIT["methods"]),
    resources:
        gpu=1,
    log:
        f"{OUT}/logs/editing/bgdino_{{set}}_{{method}}.log",
    conda:
        "../../envs/gsam.yaml"
    script:
        "../scripts/editing_bgdino.py"


rule editing_bgdino_table:
    input:
        scores=expand(rules.editing_bgdino.output.scores, set=BGD_SETS, method=EDIT["methods"]),
        clip=rules.editing_score.output.summary,
    output:
        summary=f"{OUT}/editing/bgdino_summary.csv",
        points=f"{OUT}/editing/bgdino_clip.csv",
        html=report(
            f"{OUT}/editing/bgdino_table.html",
            caption="../report/bgdino_table.rst",
            category="Image editing",
            subcategory="BG-DINO",
            labels={"figure": "table"},
        ),
        scatter=report(
            f"{OUT}/editing/bgdino_clip.png",
            caption="../report/bgdino_scatter.rst",
            category="Image editing",
            subcategory="BG-DINO",
            labels={"figure": "CLIP against BG-DINO"},
        ),
    params:
        models=BGD_MODELS,
        version=VERSION,
    log:
        f"{OUT}/logs/editing/bgdino_table.log",
    conda:
        "../../envs/plot.yaml"
    script:
        "../scripts/editing_bgdino_table.py"


BGD_TARGETS = rules.editing_bgdino_table.output if BGD_SETS else []
