#!/usr/bin/env bash
# Installs buildah from Debian's packages when it is missing (what `cargo xtask image` needs).
# The image is built without any registry or container engine: buildah works on an empty
# (`scratch`) image with the vfs storage driver, and the checks run the binary through
# `buildah mount` + `chroot`, so no runtime configuration (crun, cgroups) is needed.
set -euo pipefail

if command -v buildah >/dev/null 2>&1; then
  echo "buildah present: $(buildah --version)"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "buildah is missing and this system has no apt-get: install buildah with your package manager" >&2
  exit 1
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null 2>&1 || { echo "installing buildah needs root (or sudo)" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends buildah >/dev/null
echo "installed: $(buildah --version)"
