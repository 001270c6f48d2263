# Sourced by the GPU scripts before data-parallel runs. cudarc (under cubecl) loads NCCL as
# libnccl.so (or .so.13/.so.1), while PyTorch's wheel ships it as libnccl.so.2: link it under a
# name cudarc tries, in a folder put first on LD_LIBRARY_PATH. NVLink multicast stays off
# (KINDS.md: it can take a shared host's GPUs out of service).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if ! ldconfig -p 2>/dev/null | grep -q 'libnccl\.so '; then
  nccl=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)
  lib=$(ls "$nccl"/libnccl.so* 2>/dev/null | head -1)
  [ -z "$lib" ] && lib=$(find / -name 'libnccl.so*' -not -path '/proc/*' 2>/dev/null | head -1)
  if [ -n "$lib" ]; then
    mkdir -p /tmp/distill-nccl && ln -sf "$lib" /tmp/distill-nccl/libnccl.so
    export LD_LIBRARY_PATH=/tmp/distill-nccl${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    echo "NCCL: $lib" >&2
  else
    echo "NCCL: not found; data-parallel runs sum gradients through the host" >&2
  fi
fi
