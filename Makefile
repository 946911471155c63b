# vl_distill_ros developer entry points. `make setup` builds .venv; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# DDS discovery never leaves loopback; each make invocation gets its own domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
ifndef ROS_DOMAIN_ID
ROS_DOMAIN_ID := $(shell echo $$(( ($$$$ % 100) + 1 )))
endif
export ROS_DOMAIN_ID
export HF_HUB_OFFLINE := 1
export OMP_WAIT_POLICY ?= PASSIVE
export TRANSFORMERS_OFFLINE := 1
export AMENT_PREFIX_PATH := $(abspath $(VENV))

.PHONY: setup test real-photos-data cutouts demo results results-gzsl results-shift default-bundle box-net box-net-int8 sample-bag bench clean

# The editable install installs none of setup.py's data_files; tools/ament_develop.py links
# them (ament index entry, share/vl_distill_ros/, lib/vl_distill_ros/) into .venv and hooks
# AMENT_PREFIX_PATH into .venv/bin/activate, so ros2 pkg/run/launch find the package.
setup: $(STAMP)
	@$(PY) tools/ament_develop.py --prefix $(VENV)

$(STAMP): requirements.txt setup.py
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (CPython 3.11 is required for the ROS 2 Jazzy wheels)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: setup real-photos-data
	$(PY) -m pytest -q test

# The real photos of bench/real_photos.json that Debian's opencv-doc ships (OpenCV's
# samples/data), fetched without root into data/opencv-doc by tools/fetch_real_photos.sh
# (a few seconds, once), and the cut-out photos of bench/real_photos_cutout_kinds.json
# (tuxpaint-stamps-default's stamps, into data/tuxpaint by tools/fetch_cutouts.sh, ~15 s,
# once) and the photos of bench/real_photos_gcompris.json (gcompris-qt-data's, into
# data/gcompris by tools/fetch_gcompris_photos.sh, ~5 s, once). Without a Debian archive it
# warns and their tests skip.
real-photos-data:
	@tools/fetch_real_photos.sh data/opencv-doc || echo "warning: opencv-doc's real photos \
	were not fetched; test/test_real_photos.py skips their test (README: Real photos)" >&2
	@tools/fetch_cutouts.sh data/tuxpaint || echo "warning: tuxpaint's stamps were not \
	fetched; test/test_bench_real_photo_naming.py skips their tests (README: Real photos)" >&2
	@tools/fetch_gcompris_photos.sh data/gcompris || echo "warning: gcompris-qt-data's \
	photos were not fetched; test/test_bench_real_photo_naming.py skips their test \
	(README: Real photos)" >&2

# Unlabelled crops of real photographed things of many kinds for training
# (config/render_cutouts.yaml, README "Data"): the stamps of Debian's tuxpaint-stamps-default,
# fetched without root into data/tuxpaint by tools/fetch_cutouts.sh (~15 s, once), then
# composited on rendered backgrounds into data/cutouts, data/cutouts6 and data/cutouts12
# (three, six and twelve crops of each stamp: rows 11, 12 and 13 of the GZSL table; ~1 min).
cutouts: setup
	tools/fetch_cutouts.sh data/tuxpaint
	test -f data/cutouts/manifest.json || $(VENV)/bin/vl-distill render-cutouts \
	    --config config/render_cutouts.yaml
	test -f data/cutouts6/manifest.json || $(VENV)/bin/vl-distill render-cutouts \
	    --config config/render_cutouts.yaml --views 6 --out data/cutouts6
	test -f data/cutouts12/manifest.json || $(VENV)/bin/vl-distill render-cutouts \
	    --config config/render_cutouts.yaml --views 12 --out data/cutouts12

# The README's first command: replay the bundled sample bag through the live node with the
# bundled default student and the 26-object vocabulary; prints the summary table.
demo: export FASTRTPS_DEFAULT_PROFILES_FILE ?= $(abspath config/fastdds_shm_localhost.xml)
demo: setup
	$(VENV)/bin/vl-distill replay-eval demo/sample_tabletop --out runs/demo --no-progress

# Render the paper's YCB split, train the four ablation configs, evaluate, write results;
# then the generalised zero-shot table (auxiliary renders, calibration, open set, seeds).
results: setup cutouts
	$(VENV)/bin/vl-distill ablate --config config/ablation/ycb_paper.yaml
	$(VENV)/bin/vl-distill ablate --config config/ablation/ycb_gzsl.yaml

results-gzsl: setup cutouts
	$(VENV)/bin/vl-distill ablate --config config/ablation/ycb_gzsl.yaml

# The shipped default bundle and the teacher on the test renders of the training
# randomisation and of another one (config/render_ycb_shift.yaml: seed 7, varied
# appearance); nothing is trained. docs/results.md: "Renders from a different randomisation".
SHIFT_EVAL := $(VENV)/bin/vl-distill eval --bundle vl_distill_ros/bundles/default_student.vdb \
	--config config/ablation/gzsl_dim_noise.yaml --no-progress
results-shift: setup
	test -f data/ycb_aux/manifest.json || $(VENV)/bin/vl-distill render --config config/render_ycb_aux.yaml
	test -f data/ycb_renders/manifest.json || $(VENV)/bin/vl-distill render --config config/render_ycb.yaml
	test -f data/ycb_renders_shift/manifest.json || $(VENV)/bin/vl-distill render --config config/render_ycb_shift.yaml
	$(SHIFT_EVAL) --data-root data/ycb_renders --out runs/eval_shift/training_randomisation
	$(SHIFT_EVAL) --data-root data/ycb_renders_shift --out runs/eval_shift/varied_randomisation \
	    calibration.openset_test=data/ycb_renders_shift/test_openset

# Speed benches (bench/README.md): each script prints one JSON object on stdout
# (bench/_*.py are shared helpers, not benches; degrade_bag.py and lens_bag.py are tools that
# write a bag from a bag given to them, not benches: without arguments they failed the target).
BENCH_TOOLS := bench/degrade_bag.py bench/lens_bag.py
bench: export FASTRTPS_DEFAULT_PROFILES_FILE ?= $(abspath config/fastdds_shm_localhost.xml)
bench: setup
	@status=0; for f in $(filter-out $(BENCH_TOOLS),$(wildcard bench/[!_]*.py)); do \
	    echo "# $$f" >&2; $(PY) $$f || status=$$?; done; exit $$status

# Rebuild the shipped default student: seed 0 of the last row of the generalised zero-shot
# table (config/ablation/gzsl_zero_shot_prior.yaml, since session 67), trained by `make results-gzsl`
# (or here), exported with the 26-label paper vocabulary, its calibration record and its INT8
# ONNX model (calibrated on the run's training images; used with
# inference_backend:=onnxruntime_int8).
default-bundle: setup cutouts
	test -f data/ycb_aux/manifest.json || $(VENV)/bin/vl-distill render --config config/render_ycb_aux.yaml
	test -f data/ycb_renders/manifest.json || $(VENV)/bin/vl-distill render --config config/render_ycb.yaml
	$(VENV)/bin/vl-distill train --config config/ablation/gzsl_zero_shot_prior.yaml --resume \
	    output_dir=runs/ablation_gzsl/zero_shot_prior/seed0
	$(VENV)/bin/vl-distill export --run runs/ablation_gzsl/zero_shot_prior/seed0 \
	    --out vl_distill_ros/bundles/default_student.vdb --no-onnx --int8

# The shipped box network (needs the YCB models at ../shared/ycb_models): 130 training bags
# and 50 more of cut borders and crowded close tables (~32 min on one core), then 5000 steps
# on 2 CPU cores (~78 min), 1500 steps of fine-tuning with motion blur added
# (config/train_box_net_finetune.yaml, ~25 min), a third stage of 1500 steps on the cut and
# crowded views (config/train_box_net_third.yaml, ~26 min), the blend 0.6 * second stage +
# 0.4 * third stage (tools/blend_box_nets.py, WiSE-FT) and its INT8 copy (box_net_int8.onnx,
# ~1 min; box-net-int8 makes it alone).
box-net: setup
	$(PY) tools/make_box_net_bags.py data/box_net_bags --cut-border 20 --clutter 30
	$(VENV)/bin/vl-distill train-box-net --out runs/box_net --no-progress int8_frames=0
	$(VENV)/bin/vl-distill train-box-net --config config/train_box_net_finetune.yaml \
	    --out runs/box_net_finetune --no-progress int8_frames=0
	$(VENV)/bin/vl-distill train-box-net --config config/train_box_net_third.yaml \
	    --out runs/box_net_third --no-progress
	$(PY) tools/blend_box_nets.py runs/box_net_finetune/box_net.onnx \
	    runs/box_net_third/box_net.onnx --weight 0.4 --out vl_distill_ros/bundles/box_net.onnx
	$(MAKE) box-net-int8

# The INT8 copy of the shipped box network alone (needs data/box_net_bags, as box-net).
box-net-int8: setup
	$(VENV)/bin/vl-distill train-box-net --quantize vl_distill_ros/bundles/box_net.onnx \
	    --out runs/box_net_int8 --no-progress
	cp runs/box_net_int8/box_net_int8.onnx vl_distill_ros/bundles/box_net_int8.onnx

# Rebuild the shipped sample bag (needs the YCB models at ../shared/ycb_models): colour,
# registered depth (16UC1 mm, noise free as the colour, ~9 MB; the sensor noise model would
# make it ~16 MB) and CameraInfo.
sample-bag: setup
	rm -rf demo/sample_tabletop
	$(VENV)/bin/vl-distill make-bag --out demo/sample_tabletop --frames 60 --fps 10 \
	    --objects all --width 480 --height 360 --noise-sigma 0,0 \
	    --camera-distance 0.45,0.75 --seed 0 --depth --depth-noise none --no-progress

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
