"""Training on the result: the online dataset, the losses, the trainer and its report."""
