"""The fine-tuning stage: a dataset version → files uploaded once → a watched job → results and an evaluation."""
