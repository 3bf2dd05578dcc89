"""Domain data selection (`cptkit select`): keep the part of a domain corpus most worth training on.

features.py: words, hashed TF-IDF, windowed entropy (pure). scores.py: the scores, their rank
mix and the cut (pure). run.py: the two streaming passes over the corpus, the output and manifest.
"""
