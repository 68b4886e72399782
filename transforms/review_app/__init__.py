"""`review serve`: a local web app over the dataset versions, the review decisions and the approval gate."""
