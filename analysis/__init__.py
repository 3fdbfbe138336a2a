"""Statistics for human studies: Bradley-Terry, Thurstone, MOS, uncertainty, quality control, and the report. Never imports torch or Flask."""
