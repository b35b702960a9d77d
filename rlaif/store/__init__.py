"""The run folder and its files: generic atomic and append-only JSONL I/O, the folder's layout, the split.
"""
