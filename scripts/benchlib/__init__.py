"""The benchmark harness behind ``scripts/bench`` (issue 6).

``system`` installs and describes the tools, ``procs`` starts and stops every
process by pid and reads their CPU and memory from /proc, ``targets`` writes the
configs of the origin server and of each gateway, ``load`` drives wrk and the
small Python clients, ``cases`` runs the five cases, ``report`` turns the samples
into the markdown tables, the targets verdict and the chart.
"""
