"""Publishing a finished output folder: licence resolution, the dataset card (README.md), the HTML report."""
