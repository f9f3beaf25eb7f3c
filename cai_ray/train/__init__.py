"""Training on Ray Train, shared by the detector's and the CDM's loops: the TorchTrainer
wrapper and the rule for resuming from a checkpoint (:mod:`cai_ray.train.runner`)."""
