"""The Flask web application that runs blinded pairwise-preference and MOS trials. Never imports torch."""
