# Every target sets up what it needs: a venv in .venv with pai installed (once; again when pyproject.toml changes).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.pai-installed
PYTEST_ARGS ?=

.PHONY: setup demo test test-slow lint report clean-demo fmnist-validation fmnist-study slurm-up slurm-down synflow-seed seed-departures

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The main job on embedded data (scikit-learn's digits): none vs random vs magnitude at sparsity 0.9,
# trained briefly on the CPU, then the comparison table.
demo: $(STAMP)
	$(PY) launch.py -m experiment=demo
	$(PY) -m pai.report outputs/demo/runs --out outputs/demo/report

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]  # 5 = no slow test collected

# ruff, then mypy on pai/ (pyproject.toml [tool.mypy]: mypy's default strictness, imports without type
# information are Any).
lint: $(STAMP)
	$(VENV)/bin/ruff check pai tests launch.py benchmarks setup.py hydra_plugins
	$(VENV)/bin/mypy

# The one-node SLURM cluster that the `slurm` tests use (as root; idempotent): scripts/slurm/.
slurm-up:
	bash scripts/slurm/up.sh

slurm-down:
	bash scripts/slurm/down.sh

# The report of the last sweep: make report RUNS=outputs/runs
RUNS ?= outputs/runs
report: $(STAMP)
	$(PY) -m pai.report $(RUNS)

# The Fashion-MNIST validation committed in docs/results/fashion_mnist/ (needs `apt-get install
# dataset-fashion-mnist`): all 17 criteria at sparsity 0.98 x seeds 0/42/123 x BN warmup off/on, HD and HTS
# again at T = 1, every criterion at 0.9 and 0.995 for the 3 seeds without warmup; then the report. One job
# after another, one thread each; finished runs are skipped, so an interrupted call picks up where it stopped.
FMNIST_OUT ?= outputs/fmnist_validation
FMNIST := OMP_NUM_THREADS=1 $(PY) launch.py -m experiment=fmnist_validation out_root=$(FMNIST_OUT) logger=none
fmnist-validation: $(STAMP)
	$(FMNIST) sparsity=0.98
	$(FMNIST) sparsity=0.98 pruner=hutch_diag pruner.temperature=1 'label="hutch_diag@T1"'
	$(FMNIST) sparsity=0.98 pruner=hts pruner.temperature=1 'label="hts@T1"'
	$(FMNIST) sparsity=0.9,0.995 prune.bn_warmup=false
	$(PY) -m pai.report $(FMNIST_OUT)/runs --out docs/results/fashion_mnist/report
	$(PY) -m pai.report $(FMNIST_OUT)/runs --out docs/results/fashion_mnist/report --sparsity 0.98  # + density at 0.98

# SynFlow vs the reference code's inverted schedule (pruner=synflow_seed), docs/results/fashion_mnist/synflow_seed.md:
# the validation model and recipe without BN warmup, sparsity 0.9/0.98 x 5 seeds (20 runs), then the table.
SYNFLOW_SEED_OUT ?= outputs/synflow_seed
synflow-seed: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) launch.py -m experiment=fmnist_validation pruner=synflow,synflow_seed \
		sparsity=0.9,0.98 seed=0,42,123,1,2 prune.bn_warmup=false logger=none out_root=$(SYNFLOW_SEED_OUT)
	$(PY) benchmarks/synflow_seed_study.py $(SYNFLOW_SEED_OUT)/runs --out docs/results/fashion_mnist

# docs/departures.md's measured effects on masks (a few minutes of one thread).
seed-departures: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/seed_departures.py --out benchmarks/results/seed_departures.md

# The Fashion-MNIST study (experiment=fmnist_study): 17 criteria x
# {own mask, layer-shuffled} x sparsity {0.9, 0.98} x 5 seeds, + reinit for random/snip/hutch_diag/synflow at
# 0.98. Two one-thread jobs walk the same grid in opposite orders: each skips the runs the other has finished or
# is running (run-directory lock), so every run trains once and both cores stay busy. It shares the validation's
# out_root: finished runs of the same config are reused unless an older pai trained them (REUSABLE_FROM_SCHEMA in
# pai/results.py; the validation's own runs predate it and are rerun). Then the report of the study's runs,
# paired against random and (vs_snip/) against snip.
STUDY_OUT ?= $(FMNIST_OUT)
STUDY_DOCS ?= docs/results/fashion_mnist/study
STUDY_PRUNERS := none,random,magnitude,grad_norm,snip,grasp,grasp_reference,synflow,synflow_seed,fisher_diag,fisher_pruner,fts,hutch_diag,hutch_pruning,hts,ggn_diag,obd
STUDY_BACKWARDS := pruner=obd,ggn_diag,hts,hutch_pruning,hutch_diag,fts,fisher_pruner,fisher_diag,synflow_seed,synflow,grasp_reference,grasp,snip,grad_norm,magnitude,random,none sparsity=0.98,0.9 seed=2,1,123,42,0 prune.ablation=layer_shuffle,none
STUDY_REINIT := sparsity=0.98 prune.ablation=reinit seed=0,42,123,1,2
STUDY_REINIT_BACKWARDS := sparsity=0.98 prune.ablation=reinit seed=2,1,123,42,0
STUDY = OMP_NUM_THREADS=1 $(PY) launch.py -m experiment=fmnist_study out_root=$(STUDY_OUT) logger=none
STUDY_ONLY := --only bn_warmup=false --only sparsity=0.9,0.98 --only label= --only pruner=$(STUDY_PRUNERS)
fmnist-study: $(STAMP)
	stamp=$$(date +%Y-%m-%d_%H-%M-%S); \
	( $(STUDY) hydra.sweep.dir=$(STUDY_OUT)/sweeps/study-$$stamp-a && \
	  $(STUDY) hydra.sweep.dir=$(STUDY_OUT)/sweeps/study-$$stamp-a2 pruner=random,snip,hutch_diag,synflow $(STUDY_REINIT) ) & a=$$!; \
	( $(STUDY) hydra.sweep.dir=$(STUDY_OUT)/sweeps/study-$$stamp-b $(STUDY_BACKWARDS) && \
	  $(STUDY) hydra.sweep.dir=$(STUDY_OUT)/sweeps/study-$$stamp-b2 pruner=synflow,hutch_diag,snip,random $(STUDY_REINIT_BACKWARDS) ) & b=$$!; \
	wait $$a; ra=$$?; wait $$b; rb=$$?; [ $$ra -eq 0 ] && [ $$rb -eq 0 ]
	$(PY) -m pai.report $(STUDY_OUT)/runs --out $(STUDY_DOCS) $(STUDY_ONLY)
	$(PY) -m pai.report $(STUDY_OUT)/runs --out $(STUDY_DOCS)/vs_snip $(STUDY_ONLY) --baseline snip
