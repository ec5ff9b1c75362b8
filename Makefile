# The front door: `make help` lists the verbs. Everything runs inside .venv, made by `make setup`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
MEDIAPIPE_VENV := .venv-mediapipe
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Offline inputs (see README): passed through to the stages that read them, the paths made
# absolute so they also resolve inside the temporary copy `dvc exp run --temp` runs in.
ifneq ($(strip $(CIFAR10_ARCHIVE)),)
override CIFAR10_ARCHIVE := $(abspath $(CIFAR10_ARCHIVE))
endif
ifneq ($(strip $(MOBILENET_WEIGHTS)),)
override MOBILENET_WEIGHTS := $(abspath $(MOBILENET_WEIGHTS))
endif
export CIFAR10_ARCHIVE CIFAR10_SHA256 MOBILENET_WEIGHTS MOBILENET_WEIGHTS_SHA256
# Quick run: a slice of the data and few epochs, as a DVC experiment in a temp copy,
# so the full-run results in the workspace are never overwritten. The models infer without
# their test-time augmentation here (twice the work in every later stage; tests/test_fast.py exports it),
# and MobileNetV2 reads the images at their own 32 px: at 128 px its fine-tuning and export took
# 38 s and 89 s of a 2-core CPU's quick run, against 17 s and 20 s for the seed CNN.
QUICK_PARAMS := -S prepare.train_limit=1000 -S prepare.test_limit=200 -S shared.train.epochs=2 \
	-S fast.train.epochs=2 -S fast_robust.train.epochs=2 -S fast.float32.train.epochs=2 -S mobilenet.phases.1.epochs=1 \
	-S mobilenet.input_size=32 -S robustness.images=20 \
	-S models.cnn.tta=0 -S models.fast.tta=0 -S models.fast_robust.tta=0 -S export.int8_calibration_images=100 -S parity.latency_runs=3
PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: help setup lock-gpu gpu-check repro quick seeds readme small-folders float32-frontier tta-study fidelity profile stage-times reference deps test bench sizes robust-tune fast-tune int8-study export pull serve plots dag clean-venv

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# `make setup GPU=1`: TensorFlow's NVIDIA build (CUDA and cuDNN as pip packages), pinned by its own lock.
ifeq ($(GPU),1)
REQUIREMENTS := requirements-gpu.txt
LOCK := requirements-gpu.lock
INSTALLED := $(VENV)/.installed-gpu
else
REQUIREMENTS := requirements.txt
LOCK := requirements.lock
INSTALLED := $(VENV)/.installed
endif

$(INSTALLED): $(REQUIREMENTS) requirements.txt $(LOCK)
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or pass PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(REQUIREMENTS) -c $(LOCK)
	touch $@

# MediaPipe's metadata writer and client, in an environment of their own (requirements-mediapipe.txt says why).
$(MEDIAPIPE_VENV)/.installed: requirements-mediapipe.txt requirements-mediapipe.lock
	test -x $(MEDIAPIPE_VENV)/bin/python || $(PYTHON) -m venv $(MEDIAPIPE_VENV)
	$(MEDIAPIPE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-mediapipe.txt \
		-c requirements-mediapipe.lock
	touch $@

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "error: npm not found; install Node.js 18+ (it serves the plots and the web demo offline)"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

setup: $(INSTALLED) $(MEDIAPIPE_VENV)/.installed node_modules/.installed ## create .venv, .venv-mediapipe and node_modules with the pinned dependencies (GPU=1: TensorFlow for NVIDIA GPUs)

lock-gpu: $(VENV)/.installed ## re-resolve requirements-gpu.lock: requirements-gpu.txt under the CPU lock's pins
	mkdir -p build
	python -m pip install --quiet --disable-pip-version-check --dry-run --ignore-installed \
		--report build/gpu-report.json -r requirements-gpu.txt -c requirements.lock
	python tools/gpu_lock.py --report build/gpu-report.json --out requirements-gpu.lock

repro: setup ## run the whole pipeline (dvc repro); offline: CIFAR10_ARCHIVE=path/to/cifar-10-python.tar.gz
	dvc repro

quick: setup ## run the pipeline on a small slice as a DVC experiment (workspace untouched)
	dvc exp run --temp $(QUICK_PARAMS)
	python scripts/tools/exp_table.py   # the newest experiment's test accuracy and export targets

SEEDS ?= 3
seeds: setup ## train MODELS (default every model) with SEEDS seeds (default 3), one after another -> studies/seeds/
	python studies/seeds/seeds.py --models $(or $(MODELS),all) --seeds $(SEEDS)

readme: setup ## write the seed tables from runs.json, the README's results table (committed metrics, seed table) and docs/export.md's artifacts table
	python studies/seeds/seeds.py --models all --tables-only
	python tools/readme_results.py --readme README.md
	python scripts/artifacts_table.py --metrics reports/metrics/export --pages reports/metrics/demo --table reports/artifacts.md \
		--plot reports/eval/artifacts.csv --readme docs/export.md

fidelity: setup ## the seed CNN's readings of the seed's text (READINGS="1 2": convs per block; PRECISION=float32: in float32) against the seed's numbers, on val -> studies/fidelity/
	python studies/fidelity/fidelity.py --readings $(or $(READINGS),1 2) $(if $(PRECISION),--precision $(PRECISION))

small-folders: setup ## every model at its defaults on two small folders (digits, 1,000 CIFAR-10 images), the pipeline in a clone of HEAD -> studies/small_folder/advice.json (then make readme)
	python studies/small_folder/advice.py --archive $${CIFAR10_ARCHIVE:-data/raw/cifar-10-python.tar.gz} \
		$(if $(MOBILENET_WEIGHTS),--weights $(MOBILENET_WEIGHTS))

float32-frontier: setup ## the fast model's float32 candidates trained and measured on val, their rates against the seed recipe, the table -> studies/float32/
	python studies/float32/frontier.py train --data data/prepared/cifar10.npz --work build/float32_frontier
	python studies/float32/frontier.py rates --archive $${CIFAR10_ARCHIVE:-data/raw/cifar-10-python.tar.gz}
	python studies/float32/frontier.py table

tta-study: setup ## each model's val accuracy at each test-time augmentation level against its exported latency (TF-Lite, the page), and the level it ships -> studies/tta/
	python studies/tta/choose_tta.py --data data/prepared/cifar10.npz

profile: setup ## where a training step's time goes, by kind of op, in each precision (MODEL=fast) -> studies/profile/
	python studies/profile/profile_step.py --model $(or $(MODEL),fast)

stage-times: setup ## every stage from scratch (dvc repro --force), each one's own time -> studies/stage_times/ (RESUME=1: continue a cut run; MODEL=NAME: that model's stages after training and the comparison, against its training)
	python studies/stage_times/stage_times.py $(if $(MODEL),--model $(MODEL),$(if $(RESUME),--resume))

# The reference run, in the order that survives a lost machine: the pipeline's models live only in
# this machine's DVC cache, so each one's test accuracy goes into the seeds study (runs.json, in
# git) right after the run; bench follows on the same host, then the extra seeds, which any later
# machine can continue from runs.json.
reference: setup ## every stage from scratch (stage-times), its runs into the seeds study, bench on the same host, the comparison, SEEDS seeds of every model, the tables
	$(MAKE) stage-times
	python studies/seeds/seeds.py --models all --seeds 1
	$(MAKE) readme bench
	python studies/stage_times/stage_times.py --compare-only
	$(MAKE) seeds readme

deps: setup ## write each dvc.yaml stage's scripts/ deps from its scripts' import closure (after adding a module or an import)
	python tools/code_deps.py --write

test: setup ## run the test suite
	python -m pytest

bench: setup ## measure training img/s of every model (and against the machine's matmul rate), augmentation, speed levers (LEVER_MODELS=fast: levers of those models only)
	python studies/bench/bench.py --archive $${CIFAR10_ARCHIVE:-data/raw/cifar-10-python.tar.gz} --out studies/bench/bench.json \
		$(if $(LEVER_MODELS),--lever-models $(LEVER_MODELS))

GPU_CHECK := build/gpu_check
gpu-check: ## on a GPU machine: the GPU set-up, make bench, the fast model on the real data -> studies/bench/gpu.json
	$(MAKE) setup GPU=1
	python -c 'import tensorflow as tf, sys; sys.exit(0 if tf.config.list_physical_devices("GPU") else "make gpu-check: TensorFlow sees no GPU here")'
	mkdir -p $(GPU_CHECK)
	python studies/bench/bench.py --archive $${CIFAR10_ARCHIVE:-data/raw/cifar-10-python.tar.gz} --out $(GPU_CHECK)/bench.json
	dvc repro prepare
	python scripts/train.py --name fast --data data/prepared/cifar10.npz --model $(GPU_CHECK)/fast.keras \
		--metrics $(GPU_CHECK)/fast.json --state $(GPU_CHECK)/state
	python studies/bench/gpu_check.py --bench $(GPU_CHECK)/bench.json --train-metrics $(GPU_CHECK)/fast.json \
		--model $(GPU_CHECK)/fast.keras --data data/prepared/cifar10.npz --out studies/bench/gpu.json

sizes: setup ## MobileNetV2 input size against val and test accuracy and time (selected on val), one DVC experiment per size (SIZES="32 96")
	python studies/mobilenet_sizes/mobilenet_sizes.py $(if $(SIZES),--sizes $(SIZES))

robust-tune: setup ## candidates of the robust model on corrupted val images (CANDIDATES="LABEL FOLDER ...") -> studies/robust/
	@test -n "$(CANDIDATES)" || { echo 'give CANDIDATES="LABEL FOLDER ...": folders with NAME.keras, NAME.json and params.yaml'; exit 2; }
	python studies/robust/robust_tune.py $$(printf -- '--candidate %s %s ' $(CANDIDATES)) --images $${IMAGES:-1000}

fast-tune: setup ## candidates of the fast model on every val image, with its test-time augmentation (CANDIDATES="LABEL FOLDER ...") -> studies/fast/
	@test -n "$(CANDIDATES)" || { echo 'give CANDIDATES="LABEL FOLDER ...": folders with NAME.keras, NAME.json and params.yaml'; exit 2; }
	python studies/fast/fast_tune.py $$(printf -- '--candidate %s %s ' $(CANDIDATES))

int8-study: setup ## every post-training quantization option of each trained model, measured: studies/int8/<model>.json (MODELS="cnn")
	@names="$(MODELS)"; [ -n "$$names" ] || names=$$(cd scripts && python -c 'from cifar import params; print(*params.load(["models"], "../params.yaml")["models"])'); \
	for name in $$names; do \
		[ -f models/trained/$$name.keras ] || { echo "make int8-study: models/trained/$$name.keras not found: train it first (dvc repro, or make pull)" >&2; exit 1; }; \
		python studies/int8/int8_study.py --name $$name --model models/trained/$$name.keras \
			--data data/prepared/cifar10.npz --out studies/int8/$$name.json || exit 1; \
	done

export: setup ## export the trained models (SavedModel, TF-Lite, TF.js) and check each on the test set
	dvc repro --glob 'parity@*'   # one per model of the registry, with every stage they need
	@echo "exports in models/export/; parity in reports/metrics/export/ (dvc metrics show)"

pull: setup ## fetch every pipeline output (data, models, exports) from the DVC remote instead of recomputing
	@if [ -z "$$(dvc remote list)" ]; then \
		echo "make pull: no DVC remote configured; add one with 'dvc remote add -d NAME URL' (README: Sharing results)" >&2; exit 1; fi
	dvc pull     # every output dvc.lock names; fails naming any the remote lacks
	dvc status   # "Data and pipelines are up to date.": nothing to recompute

serve: setup ## serve the browser demo (web/) with the exported TF.js models; PORT=8000
	python scripts/tools/serve.py --port $(PORT)

plots: setup ## render every DVC plot to reports/plots/index.html, viewable offline
	python scripts/tools/plots_template.py --out build/plots_template.html
	dvc plots show --html-template build/plots_template.html -o reports/plots

dag: setup ## draw the stage graph
	dvc dag

clean-venv: ## remove .venv and .venv-mediapipe
	rm -rf $(VENV) $(MEDIAPIPE_VENV)
