"""speechchat: spoken-dialogue training data for speech language models."""

__version__ = "0.1.0"
