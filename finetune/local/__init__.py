"""The local fine-tuning backend: training and answering with an open-weights model on this machine."""
