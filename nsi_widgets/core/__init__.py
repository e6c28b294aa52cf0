"""The streaming engine and what every analysis shares.

Passes over a dataset feeding consumers (:mod:`.passes`), layer recording (:mod:`.layers`), the one
table of module kinds (:mod:`.modules`), receptive fields (:mod:`.receptive_field`), reading user
data (:mod:`.data`), fingerprints and checkpoints (:mod:`.checkpoint`), ``torch.distributed``
(:mod:`.distributed`), the atomic writer and the versioned file format (:mod:`.storage`), and the
package's error types (:mod:`.errors`). Nothing here knows any particular analysis.
"""
