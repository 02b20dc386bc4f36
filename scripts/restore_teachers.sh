#!/usr/bin/env bash
# The teachers of the old 160 px recipes (lite0_distill*.yaml: lite0 1.1.0-1.3.0, "160 px, old protocol"),
# restored from git history into training/teachers/ (gitignored). They trained on all of train, the
# selection hold-out included, so nothing chosen under the 320 px protocol uses them; they are kept
# reachable only so that those recipes and reports/ablation.md stay reproducible.
#   scripts/restore_teachers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
restore() {  # COMMIT PATH-IN-THAT-COMMIT TARGET
  local commit=$1 source=$2 target=$3
  if [ -f "$target/model.safetensors" ]; then echo "$target: already here"; return; fi
  if ! git cat-file -e "$commit" 2>/dev/null; then
    echo "restore_teachers: commit $commit is not in this clone (a shallow clone? run: git fetch --unshallow)" >&2
    exit 1
  fi
  local tmp
  tmp=$(mktemp -d)
  git archive "$commit" "$source" | tar -x -C "$tmp"
  mkdir -p "$(dirname "$target")"
  mv "$tmp/$source" "$target"
  rm -rf "$tmp"
  echo "$target: model from $commit ($source)"
}
restore b2073e8 training/checkpoints/lite2 training/teachers/lite2-1.0.0        # Lite2 1.0.0, 160 px
restore f9dc522 training/teachers/lite0-1.2.0 training/teachers/lite0-1.2.0     # lite0 1.2.0, 160 px
