"""Audio quality and voice identity scores shared by the speaker importers and the verify stage."""
