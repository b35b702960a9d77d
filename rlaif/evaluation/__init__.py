"""How far to trust the judge and what training did: agreement metrics, human-label readers, your own labels,
prompt-injection robustness, and the HTML reports.
"""
