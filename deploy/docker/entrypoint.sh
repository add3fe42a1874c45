#!/bin/sh
# Image entrypoint (run under tini): prepare the model bundle if asked to, then become
# `clipserve serve` with the container's arguments, so the server is the process that receives
# SIGTERM and drains. Configuration comes from flags (container args) and CLIPSERVE_* variables.
set -eu
clipserve-prepare-model
exec clipserve serve "$@"
