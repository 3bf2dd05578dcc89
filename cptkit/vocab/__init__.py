"""`cptkit vocab`: add domain tokens to a base model's vocabulary (see docs/vocabulary.md).

base.py      the base tokenizer's kind, and text as words of its own tokens
candidates.py  a tokenizer of the base's kind trained on the domain corpus: the candidate strings
select.py    the greedy choice of new tokens by the tokens they save on the domain corpus
extend.py    the base tokenizer with the chosen tokens appended (old ids keep their meaning)
embeddings.py  resized embeddings; new rows are means of the original pieces' rows
measure.py   tokens per byte / character before and after
corpus.py    curated text samples from the prepared run folder
config.py    the command's settings (VocabConfig)
run.py       the command: prepare, choose, extend, initialise, measure, write the folder
"""
