"""tuning: a stage of the tvmflow pipeline."""
