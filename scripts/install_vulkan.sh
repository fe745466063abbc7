#!/usr/bin/env bash
# Installs a software Vulkan driver (Mesa's lavapipe) and the Vulkan loader, so the wgpu
# backend runs without a GPU: what CI uses for tests/wgpu.rs. Debian/Ubuntu, as root (or
# with sudo). Does nothing if lavapipe is already there.
set -euo pipefail
if ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 && ldconfig -p | grep -q libvulkan.so.1; then
    echo "lavapipe and libvulkan1 already installed"
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mesa-vulkan-drivers libvulkan1
ls /usr/share/vulkan/icd.d/
