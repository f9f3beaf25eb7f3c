"""CAI-guided diffusion (CDM): a mask- and class-conditioned inpainting diffusion model trained
on CAI's pseudo-anomalies, which then generates new anomalies without the DAAD's limit."""
