#!/usr/bin/env bash
# `make system-deps`: the FFmpeg shared libraries torchcodec loads (libavutil, libavcodec, libavformat,
# libavdevice, libavfilter, libswscale, libswresample; FFmpeg 4 or newer). PyAV and decord bundle their own
# FFmpeg and need nothing from here.
#
# Idempotent: does nothing when the libraries are already present. Otherwise, as root on Debian/Ubuntu, installs
# only the seven library packages (no `ffmpeg` command-line tool; Debian 12: libavcodec59 & co., FFmpeg 5.1),
# picking the package names the distribution has. Without root it says what to do and exits 1.
set -euo pipefail

LIBS=(libavutil libavcodec libavformat libavdevice libavfilter libswscale libswresample)

missing_libs() {  # the ones the dynamic loader's cache does not list (any soversion)
    local lib cache
    cache=$(/sbin/ldconfig -p 2>/dev/null || true)
    for lib in "${LIBS[@]}"; do
        grep -Eq "^[[:space:]]+${lib}\.so\.[0-9]+ " <<<"$cache" || echo "$lib"
    done
}

missing=$(missing_libs | tr '\n' ' ')
if [ -z "${missing// /}" ]; then
    echo "system-deps: FFmpeg shared libraries present (torchcodec can load them); nothing to do"
    exit 0
fi

if [ "$(uname -s)" != Linux ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: torchcodec needs FFmpeg's shared libraries (missing: ${missing% }); this is not a" \
         "Debian/Ubuntu system: install FFmpeg 4 or newer with your package manager (e.g. 'brew install ffmpeg')" >&2
    exit 1
fi

if [ "$(id -u)" != 0 ]; then
    echo "system-deps: torchcodec needs FFmpeg's shared libraries (missing: ${missing% }), and installing them" \
         "needs root. Either ask an administrator to run 'make system-deps', or, without root, install FFmpeg" \
         "into a conda environment ('conda install -c conda-forge ffmpeg') and put its lib/ on" \
         "LD_LIBRARY_PATH (README: 'torchcodec without root'). Until then the torchcodec tests are skipped;" \
         "PyAV, the default decoder, needs nothing." >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
resolve() {  # newest package named <lib><soversion> that apt knows, e.g. libavcodec59
    apt-cache pkgnames "$1" 2>/dev/null | grep -E "^$1[0-9]+$" | sort -V | tail -n 1
}
if [ -z "$(resolve libavcodec)" ]; then
    apt-get update -qq
fi
packages=()
for lib in "${LIBS[@]}"; do
    pkg=$(resolve "$lib")
    if [ -z "$pkg" ]; then
        echo "system-deps: apt has no package for $lib (looked for ${lib}<N>); install FFmpeg's libraries by hand" >&2
        exit 1
    fi
    packages+=("$pkg")
done
echo "system-deps: apt-get install ${packages[*]}"
if ! apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; then
    echo "system-deps: install failed; refreshing the package lists (apt-get update) and trying once more"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
missing=$(missing_libs | tr '\n' ' ')
if [ -n "${missing// /}" ]; then
    echo "system-deps: still missing after the install: ${missing% }" >&2
    exit 1
fi
echo "system-deps: FFmpeg shared libraries installed"
