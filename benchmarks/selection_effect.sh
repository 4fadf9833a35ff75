#!/usr/bin/env bash
# Held-out exact match of each selection strategy vs a random subset of the same size (notebook figures:
# "Measured effect vs random" in the hand-written RESULTS.md of commit 07c8cc9). Pool: 20k difficulty-1 `pool` rows (20% noisy), budget 0.5; each subset trains the tiny preset from
# random init for 600 OneCycle steps. SCORER is a trained export (e.g. the quickstart's runs/quickstart/version_0/hf).
#
#   bash benchmarks/selection_effect.sh <SCORER> <OUT_DIR> [seeds...]     # then read <OUT_DIR>/*/result.txt
set -euo pipefail
SCORER=$(realpath "$1"); OUT=$(realpath -m "$2"); shift 2; SEEDS=("${@:-0 1 2 3 4}")
C=$(cd "$(dirname "$0")/.." && pwd)/configs/selection
export HF_HUB_OFFLINE=1 WANDB_MODE=${WANDB_MODE:-disabled} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
COMMON=(--trainer.max_steps 600 --trainer.val_check_interval 600 --trainer.check_val_every_n_epoch null
  '--model.init_args.scheduler={"class_path":"torch.optim.lr_scheduler.OneCycleLR","init_args":{"max_lr":0.003,"total_steps":600,"pct_start":0.1}}'
  --data.init_args.pool.init_args.train.init_args.n 20000 '--data.init_args.pool.init_args.train.init_args.difficulties=[1]'
  '--data.init_args.pool.init_args.eval_prompts.init_args.difficulties=[1]' --data.init_args.budget 0.5)
SC="{\"name_or_path\": \"$SCORER\"}"
mkdir -p "$OUT" && cd "$OUT"
# LESS warmup: LoRA on the scorer, a random 5% of the pool, one checkpoint per epoch
[ -d warmup/runs/less_warmup/version_0/less ] || (mkdir -p warmup && cd warmup && ltune fit --config "$C/less_warmup.yaml" \
  --model.init_args.backbone.name_or_path "$SCORER" --model.init_args.optimizer.init_args.lr 3e-4 \
  --data.init_args.pool.init_args.train.init_args.n 20000 '--data.init_args.pool.init_args.train.init_args.difficulties=[1]' \
  --data.init_args.pool.init_args.eval_prompts.init_args.n 20 > fit.log 2>&1)
# the trained model is the tiny preset without LoRA; LESS's target: 60 difficulty-1 test rows of every category
sed -e '/^      lora: {r: 16/d' -e 's/{format: instruction, n: 60, split: val, categories: \[add, sub, mul\]}/{format: instruction, n: 60, split: test, difficulties: [1]}/' \
  -e 's/{format: prompts, n: 200, split: val, categories: \[add, sub, mul\]}/{format: prompts, n: 200, split: val}/' "$C/less.yaml" > less.yaml
sed -e '/^  callbacks:/,/^      init_args: {epochs_per_round/d' "$C/mods.yaml" > mods.yaml   # quality + k-center stage only
for S in ${SEEDS[@]}; do
  for ST in random ifd deita mods mods_verifier less; do
    case $ST in
      random) A=(--config "$C/random.yaml" --data.init_args.seed "$S");;
      ifd) A=(--config "$C/ifd.yaml" --data.init_args.scorer "$SC");;
      deita) A=(--config "$C/deita.yaml" --data.init_args.complexity_scorer "$SC" --data.init_args.quality_scorer "$SC");;
      mods) A=(--config "$OUT/mods.yaml" --data.init_args.reward.init_args.backbone "$SC" --data.init_args.augment_size 0);;
      mods_verifier) A=(--config "$OUT/mods.yaml" --data.init_args.reward '{"class_path": "ltune.judges.VerifierJudge"}'
                     --data.init_args.augment_size 0);;   # a reward that knows quality: answers checked by problems.solve
      less) A=(--config "$OUT/less.yaml" --data.init_args.projection_dim 1024
               --data.init_args.checkpoints "$OUT/warmup/runs/less_warmup/version_0/less"
               --data.init_args.scorer "{\"name_or_path\": \"$SCORER\", \"lora\": {\"r\": 16, \"alpha\": 64, \"dropout\": 0.1}}");;
    esac
    [ $ST = random ] || A+=(--data.init_args.cache_dir "$OUT/cache")
    mkdir -p "${ST}_s$S" && (cd "${ST}_s$S" && ltune fit "${A[@]}" "${COMMON[@]}" --seed_everything "$S" \
      --model.init_args.backbone.tiny.init_seed "$S" > fit.log 2>&1 && grep -A8 "before -> after" fit.log > result.txt) \
      || echo "$ST seed $S failed: see $OUT/${ST}_s$S/fit.log"
  done
done
