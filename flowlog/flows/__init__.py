"""The flow lifecycle: flows' ends with what they carried, and windowed summaries."""
