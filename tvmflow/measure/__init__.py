"""measure: a stage of the tvmflow pipeline."""
