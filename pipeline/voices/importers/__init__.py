"""Speaker-pool importers: public corpora (and plain folders) -> a self-contained speaker manifest (schema v2).

One module per corpus layout turns a source tree into `SourceSpeaker`s; `clips` validates and resamples each
reference clip; `writer` writes the clips, the JSONL manifest and the import report; `importer` runs it.
"""
