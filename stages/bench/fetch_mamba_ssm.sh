#!/usr/bin/env bash
# Unpacks mamba_ssm's sdist (pinned, checked) into DEST, for the Triton peer of
# `distill bench ssd` (stages/bench/ssd_torch.py --impl triton: MAMBA_SSM_SRC=DEST/mamba_ssm-2.3.2.post1).
# The GPU machine has Triton and PyTorch but no network: fetch here, carry DEST (216 KB) there.
#
#   stages/bench/fetch_mamba_ssm.sh DEST
set -euo pipefail
dest=$1
url=https://files.pythonhosted.org/packages/af/48/aa7bec0efc7453fa0512276c0069c854bf684219050294266534bfef34bb/mamba_ssm-2.3.2.post1.tar.gz
sum=104cc47e9101e5401a675fa2b784f2952b9b037f3b1dd83b5ac544394e95d028
mkdir -p "$dest"
tarball=$dest/mamba_ssm-2.3.2.post1.tar.gz
[ -f "$tarball" ] || curl -fsSL -o "$tarball" "$url"
echo "$sum  $tarball" | sha256sum -c --quiet
tar xzf "$tarball" -C "$dest"
echo "$dest/mamba_ssm-2.3.2.post1"
