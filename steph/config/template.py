"""The commented stephctl.yaml that ``stephctl init`` writes (it loads to the defaults)."""

from __future__ import annotations

TEMPLATE = """\
# stephctl project configuration. Every key is optional; the values shown are the defaults.
# CLI flags override this file; each stage saves the resolved config next to its outputs.
# Reference: docs/configuration.md

# Cancers of the project (upper-case TCGA abbreviations; tcga_brca / brca are accepted).
# Empty = every labels/<CANCER>.csv found.
cancers: {cancers}

# Rare tumours: cancers with too few patients to train, evaluated zero-shot only by
# `stephctl transfer` (docs/transfer.md). Not trained, merged or evaluated by the other stages.
evaluation_only: []

# The cancers you transfer to (empty = every cancer). The others are sources only: train-source
# and task-vector make them on merge.source_fold alone (the fold merge takes sources from), and
# `stephctl status` expects merges for these targets only.
targets: []

# Patch encoder; features are stored under features/<encoder>/.
# tiny-cnn is a small built-in CPU encoder with deterministic random weights: it makes a new
# project extract out of the box, but it is NOT a pathology foundation model.
# To use UNI2-h (what the STEPH paper used), request access at https://huggingface.co/MahmoodLab/UNI2-h,
# download pytorch_model.bin and set:
#   encoder: uni2-h
#   extract:
#     weights:
#       uni2-h: /path/to/UNI2-h/pytorch_model.bin
# `stephctl extract --list-encoders` lists every encoder.
encoder: {encoder}

seed: 42

# Other names feature files may record for the encoder (files recording another encoder are
# refused; uni_v2 / UNI2-h / uni2 already count as uni2-h).
encoder_aliases: []

# Trust list for bundles from other labs: an ssh-keygen allowed-signers file ("principal key-type
# base64-key" per line). When set, predict --model, import-sources and merge accept only bundles
# signed by a listed key (stephctl export --sign KEY writes <bundle>.sig). null: hashes only.
allowed_signers: null

# Most patches one slide's features may hold: a feature file declaring more is refused before
# it is read (docs/security.md).
max_patches: 1000000

# Point labels, splits and features at an existing download instead of copying it. UNI2-h-DSS
# with the STEPH reference's feature store (one LMDB per cancer, `pip install 'stephctl[lmdb]'`):
#   paths:
#     labels: /data/UNI2-h-DSS/data_split/stratified-5foldcv/{{dataset}}/{{dataset}}_survival.csv
#     splits: /data/UNI2-h-DSS/data_split/stratified-5foldcv/{{dataset}}/splits_{{fold}}.csv
#     features: /data/UNI2-h-features/TCGA/{{dataset}}.lmdb
# or MahmoodLab's UNI2-h h5 release, one folder per TCGA project (COADREAD, GBMLGG, KIPAN, LUNG
# and STES span several; {{project}} comes from the labels' project column):
#     features: /data/UNI2-h-features/TCGA/{{project}}/{{slide_id}}.h5
# Stores by suffix: .h5/.hdf5 (features or STAMP feats), .pt/.pth, .npy, .lmdb. See docs/reproduce.md.
# Fields: {{cancer}} BRCA, {{cancer_lower}} brca, {{dataset}} tcga_brca, {{fold}}, {{encoder}}, and in
# paths.features also {{slide_id}}, {{project}} TCGA-BRCA, {{patient_id}}.
paths:
  labels: null
  splits: null
  features: null

# Columns of the labels CSV (one row per slide) and the unit of the times.
# TCGA-CDR style: patient: bcr_patient_barcode, time: DSS.time, event: DSS.
labels:
  patient: patient_id
  slide: null                # null = slide_id, else pathology_id
  time: t
  event: e
  project: project           # the slide's TCGA project, for {{project}} in paths.features
  time_unit: days            # days | months (months are converted to days, x 30.4375)

extract:
  patch_size: 256            # pixels at target_mpp
  target_mpp: 0.5            # microns per pixel (0.5 = 20x)
  min_tissue_fraction: 0.25  # keep a patch when at least this fraction is tissue
  mpp: null                  # fallback slide MPP when neither the slide nor the manifest has one
  mpp_range: [0.05, 16.0]    # plausible slide MPP; outside it a slide is refused
  weights: {{}}                # local weight files per encoder name
  batch_size: 64
  workers: null              # slide-reading threads ahead of the encoder; null = usable CPUs - 1 (2..16)
  device: auto               # auto | cpu | cuda | cuda:N
  precision: auto            # auto | fp32 | fp16 | bf16
  tissue:
    thumbnail_mpp: 8.0
    saturation_threshold: null   # null = Otsu on HSV saturation
    min_saturation: 0.05
    max_saturation: 0.15         # Otsu threshold is clipped to [min_saturation, max_saturation]
    max_brightness: 0.92
    min_object_um2: 20000.0
    max_hole_um2: 20000.0

model:                       # ABMIL with gated attention (input dim follows the features)
  dim_emb: 512
  dim_attn: 384
  dropout: 0.25
  time_bins: 32              # yearly bins: cut points 0, 365, ..., 11680 days, last bin open-ended
  bin_width_days: 365.0

train:                       # reference protocol of the cancer-specific models
  epochs: 20
  batch_size: 16             # bags per optimiser step, one loss over the batch
  lr: 1.0e-4
  weight_decay: 1.0e-5       # AdamW, >= 2-d weights only
  warmup_epochs: 1.0         # cosine schedule with linear warm-up
  alpha: 0.5                 # SurvMLE: loss = U + (1 - alpha) C
  eps: 1.0e-7
  seed: 42
  folds: null                # null = every splits_<k>.csv
  device: auto
  cache_gb: 4.0              # features cached in memory up to this size, streamed beyond
  max_bag_batch_patches: 0   # patch budget per forward: 0 = automatic, -1 = whole padded batch
  eval_every: 0              # test-split C-index every N epochs (logged); 0 = only at the end
  precision: auto            # auto | fp32 | bf16 | fp16 (CUDA autocast; CPU runs fp32)

merge:
  method: steph              # `stephctl merge --list-methods`
  sources: null              # null = every other cancer
  source_fold: 0             # the reference uses fold-0 source models for every target fold
  folds: null
  gamma_grid: [0.005, 0.05]  # candidates of gamma: auto
  inner_folds: 3             # inner folds of gamma: auto (target's training split only)
  epochs: null               # null = train.epochs
  options: {{}}                # method settings for every method that reads them, e.g. {{top_k: 3, density: 0.2}}
  # steph:                   # one method's own settings win: `stephctl merge --list-methods` lists them
  #   top_k: 5               # task-vector mixtures kept per bag
  #   gamma: 0.005           # aggregation loss weight (0.005 or 0.05); auto = inner CV over gamma_grid
  #   beta: 0.05             # mixing loss weight
  #   mix: hypernet          # hypernet | fnn | fixed | global   (ablations)
  #   fixed_lambda: 1.0      # with mix: fixed (0 = sources only, 1 = target only)
  #   weights: hypernet      # hypernet | global           (ablation)
  #   sparse: true           # false = aggregate all sources (ablation)

evaluate:
  bootstrap: 1000            # resamples for 95% intervals
  seed: 42
  confidence: 0.95
  auc_years: [1.0, 3.0, 5.0]
  reference_method: cancer-specific
  report: true

transfer:                    # `stephctl transfer`: the cross-cancer transferability study
  bootstrap: 200             # resamples of each test fold for C-index and gain intervals
  confidence: 0.95
  seed: 42
  permutations: 2000         # for the Spearman p-values of the factors
  mmd_bandwidth: null        # Gaussian-kernel sigma of the feature MMD; null = median distance

slurm:                       # used by `stephctl slurm`
  partition: null
  account: null
  time: "04:00:00"
  mem: 32G
  cpus: 8
  gpus: 1
  max_parallel: null
  activate: ""               # e.g. "source /path/to/stephctl/.venv/bin/activate"
  extra: []
  slides_per_task: 100       # extract array: slides per task when --num-shards is not given
  units_per_task: 1          # units of the task list per array task (one process loads Python and torch once)
  lock_wait_minutes: 60       # an array task whose unit a live process holds waits this long, then checks
  check_resources: true      # check time/mem/cpus/gpus against `sinfo` before submitting
"""


def render(*, encoder: str, cancers: list[str]) -> str:
    cancer_text = "[" + ", ".join(cancers) + "]"
    return TEMPLATE.format(encoder=encoder, cancers=cancer_text)
