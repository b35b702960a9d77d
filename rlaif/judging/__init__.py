"""What a judgment is: the constitution, the judge prompt templates, the jobs and their cache keys, the
judgment cache, and the scores computed from judgments.
"""
