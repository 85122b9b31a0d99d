#!/usr/bin/env bash
# buf breaking (buf.yaml's rules, FILE) over the contract's history, so that a change that would
# break a deployed client fails CI unless it is declared deliberate.
#
#   scripts/check_breaking.sh        # in the repository (make breaking; CI runs it)
#
# What is checked, precisely: CI runs on a fresh clone of the submitted main, where HEAD is the
# new tip and nothing records which commit the previous green run saw; one submission may carry
# several commits. So every commit on HEAD's first-parent history that touches protos/ or
# buf.yaml is checked against its parent (this includes HEAD against HEAD~1), and then the
# working tree against HEAD (uncommitted edits, for developers). On a branch, the branch's
# commits are checked the same way before they land.
#
# A deliberate breaking change: put a line `Breaking-Change: <why, and what callers must do>` in
# the commit message (it survives rebases) and note it in the README's "Changing the contract".
# Breaks made before this check existed are listed in KNOWN_BREAKS with their reason.
set -euo pipefail

SCRIPT_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUF="${BUF:-$SCRIPT_ROOT/node_modules/.bin/buf}"
# commit id prefix, reason
KNOWN_BREAKS=(
  "f9b4d8c CreateAppRequest.request_id removed before any release (nothing honoured it)"
)

if [[ ! -x "$BUF" ]]; then
  echo "check_breaking: $BUF is missing: run \`npm ci\` (or \`make breaking\`)" >&2
  exit 2
fi
TOP="$(git rev-parse --show-toplevel)"
cd "$TOP"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# Writes the contract (buf.yaml + protos/) of a commit to a directory; false if it has none.
extract() {
  local commit="$1" dir="$2"
  mkdir -p "$dir"
  git cat-file -e "$commit:buf.yaml" 2>/dev/null && git cat-file -e "$commit:protos" 2>/dev/null || return 1
  git archive "$commit" buf.yaml protos | tar -x -C "$dir"
}

known_break() {
  local commit="$1" entry
  for entry in "${KNOWN_BREAKS[@]}"; do
    [[ "$(git rev-parse "$commit")" == "$(git rev-parse "${entry%% *}" 2>/dev/null)" ]] && return 0
  done
  return 1
}

failed=0
checked=0
for commit in $(git rev-list --first-parent --reverse HEAD -- protos buf.yaml); do
  subject="$(git log -1 --format='%h %s' "$commit")"
  if [[ "$(git rev-list --parents -n 1 "$commit")" != *" "* ]]; then
    continue  # the first commit: nothing before it to break
  fi
  if ! git cat-file -e "$commit^" 2>/dev/null; then
    echo "check_breaking: $subject: its parent is not in this shallow clone, not checked" >&2
    continue
  fi
  rm -rf "$WORK/new" "$WORK/old"
  if ! extract "$commit^" "$WORK/old"; then
    continue  # the commit that introduced the contract
  fi
  extract "$commit" "$WORK/new" || { echo "FAIL $subject: protos/ or buf.yaml removed"; failed=1; continue; }
  if git log -1 --format=%B "$commit" | grep -Eq '^Breaking-Change: *[^ ]'; then
    echo "skip $subject (Breaking-Change: declared in the commit message)"
    continue
  fi
  if known_break "$commit"; then
    echo "skip $subject (listed in KNOWN_BREAKS)"
    continue
  fi
  checked=$((checked + 1))
  if ! out="$(cd "$WORK" && "$BUF" breaking new --against old 2>&1)"; then
    echo "FAIL $subject breaks the contract of its parent:"
    echo "${out//new\//}" | sed 's/^/  /'
    failed=1
  fi
done

# Uncommitted edits against HEAD (nothing to do on a clean checkout).
if ! git diff --quiet HEAD -- protos buf.yaml 2>/dev/null || [[ -n "$(git ls-files --others --exclude-standard protos)" ]]; then
  rm -rf "$WORK/new" "$WORK/old"
  mkdir -p "$WORK/new"
  cp -r buf.yaml protos "$WORK/new/"
  if extract HEAD "$WORK/old"; then
    checked=$((checked + 1))
    if ! out="$(cd "$WORK" && "$BUF" breaking new --against old 2>&1)"; then
      echo "FAIL the working tree breaks the contract of HEAD:"
      echo "${out//new\//}" | sed 's/^/  /'
      failed=1
    fi
  fi
fi

if [[ $failed -ne 0 ]]; then
  echo "buf breaking failed: keep the old field numbers and names (add, deprecate, never rename or"
  echo "reuse), or declare a deliberate break with a 'Breaking-Change: <why>' line in the commit message."
  exit 1
fi
echo "buf breaking: $checked contract change(s) checked, none breaks a deployed client"
