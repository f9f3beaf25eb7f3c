"""Every synthesizer, one file each (settings model and synthesizer), registered in
:mod:`cai_ray.synthesizers.registry`: CAI (:mod:`.cai`, over :mod:`cai_ray.core.cai`), the
baselines CutPaste, NSA and DRAEM, and the CAI-guided diffusion model (:mod:`.cdm`)."""
