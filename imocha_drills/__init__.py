"""Reliability drills (issue 5): seed the sandbox, run the real jobs, inject a fault, recover as an operator
would, then compare Degreed's final state with the truth computed from iMocha.

``harness`` holds the sandbox with its fault gates, the job runners (in this process, or in a child
process that a drill may SIGKILL) and the truth/compare logic; ``catalogue`` the bad-input catalogue;
``proxy`` a TCP proxy that plays a lost PostgreSQL server. ``bench/drills.py`` runs the same drills at
full size and prints the figure table.
"""
