//! CubeCL GPU kernels for the Mamba hot paths (issue 9): the multi-step cached state update
//! for speculative verification, the causal conv1d ring-buffer update and the fused decode
//! step, each beside a plain-tensor `*_reference` twin that the CPU path uses and the parity
//! tests compare against. Empty until that issue lands: today the stages run the plain-tensor
//! forms in `distill-stages` (`mamba/`) on every device.
