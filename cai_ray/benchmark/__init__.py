"""The detector benchmark: settings (:mod:`.config`), the runs (:mod:`.run`: synthesise, train,
score per synthesizer and seed, resumable) and the report (:mod:`.report`)."""
