"""Renderings of kept conversations beyond the per-exchange samples: the duplex timeline and user-side augmentation."""
