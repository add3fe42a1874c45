#!/bin/sh
# clipserve-prepare-model: makes sure the model bundle named by CLIPSERVE_MODEL exists before the
# server starts, by converting the open_clip checkpoint mounted at CLIPSERVE_CONVERT_FROM.
#
#   CLIPSERVE_CONVERT_FROM   open_clip checkpoint directory (open_clip_config.json + weights). Unset:
#                            nothing to do, exit 0.
#   CLIPSERVE_MODEL          bundle directory to create; must be an absolute path whose parent is
#                            writable (e.g. /models/bundles/vit-l-14 on the models volume).
#   CLIPSERVE_CONVERT_VOCAB  optional BPE vocabulary file, passed as --vocab.
#   CLIPSERVE_CONVERT_ARGS   optional extra `clipserve convert` flags, split on whitespace.
#
# A bundle counts as present when its directory holds the bundle manifest (clipserve.json, written
# last by `clipserve convert`). Conversion writes to a private "<bundle>.partial.<host>.<pid>"
# directory and renames it into place, so a crash never leaves a half-written bundle that a later
# start would take for a good one, and two replicas converting at once cannot interleave their
# files: the first rename wins, the loser discards its copy.
set -eu

log() { printf 'clipserve-prepare-model: %s\n' "$*" >&2; }
die() { log "error: $*"; exit "${2:-1}"; }

MANIFEST=clipserve.json

bundle_present() {
  [ -f "$1/$MANIFEST" ]
}

dir_non_empty() {
  [ -d "$1" ] && [ -n "$(ls -A "$1" 2>/dev/null)" ]
}

src="${CLIPSERVE_CONVERT_FROM:-}"
if [ -z "$src" ]; then
  exit 0
fi

dest="${CLIPSERVE_MODEL:-}"
case "$dest" in
  '') die "CLIPSERVE_CONVERT_FROM is set but CLIPSERVE_MODEL (the bundle directory to create) is not" 64 ;;
  hf-hub:*) die "CLIPSERVE_MODEL=$dest is a hub reference; conversion needs a bundle directory path" 64 ;;
  /*) ;;
  *) die "CLIPSERVE_MODEL=$dest must be an absolute path" 64 ;;
esac
dest="${dest%/}"

if bundle_present "$dest"; then
  log "bundle present at $dest; not converting $src"
  exit 0
fi
if dir_non_empty "$dest"; then
  die "$dest is not empty but holds no $MANIFEST: not a bundle, and not overwritten; remove it or point CLIPSERVE_MODEL elsewhere" 65
fi

[ -e "$src" ] || die "checkpoint CLIPSERVE_CONVERT_FROM=$src does not exist (is the volume mounted?)" 66
vocab="${CLIPSERVE_CONVERT_VOCAB:-}"
if [ -n "$vocab" ] && [ ! -f "$vocab" ]; then
  die "vocabulary CLIPSERVE_CONVERT_VOCAB=$vocab is not a file" 66
fi

parent="$(dirname "$dest")"
mkdir -p "$parent" || die "cannot create $parent (the models volume must be writable to convert)" 73

partial="$dest.partial.$(uname -n).$$"
rm -rf "$partial"
trap 'rm -rf "$partial"' EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

log "converting $src -> $dest"
# Word splitting of CLIPSERVE_CONVERT_ARGS is intended: it holds a list of flags.
# shellcheck disable=SC2086
if [ -n "$vocab" ]; then
  clipserve convert "$src" --out "$partial" --vocab "$vocab" ${CLIPSERVE_CONVERT_ARGS:-}
else
  clipserve convert "$src" --out "$partial" ${CLIPSERVE_CONVERT_ARGS:-}
fi
bundle_present "$partial" || die "clipserve convert exited 0 but $partial holds no $MANIFEST" 70

# mv -T renames the directory itself (never into an existing one); rename(2) replaces an empty
# directory but fails on a non-empty one, which is exactly "another replica finished first".
if mv -T "$partial" "$dest" 2>/dev/null; then
  log "bundle ready at $dest"
elif bundle_present "$dest"; then
  log "another replica finished converting $dest first; using its bundle"
else
  die "could not move $partial to $dest" 73
fi
